"""Strided convolutions padded as TensorFlow's `padding='same'` pads them, which is how the authors built their
baselines. For stride s, TF keeps ceil(n / s) outputs (n * s for a transposed conv) and pads the total it needs
with the smaller half before and the rest after; PyTorch's `padding=k // 2` pads both sides alike, which at
stride 2 shifts every output by a pixel for odd kernels. `padding="symmetric"` keeps that older behaviour."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def tf_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) of one axis of `size` for a conv: ceil(size / stride) outputs."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """nn.Conv2d whose padding is TF's 'same' for the input it is given (it depends on the input's size)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        (top, bottom), (left, right) = (tf_pads(n, k, s) for n, k, s in zip(x.shape[-2:], self.kernel_size, self.stride))
        if top == bottom and left == right:  # the conv's own padding: no padded copy of the input
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias, self.stride)


class SameConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with TF's 'same' output: n * stride rows and columns of the full transposed conv,
    starting at the 'before' padding of the conv it transposes ((k - s) // 2 for k >= s). PyTorch's own padding
    crops both ends alike, so the odd remainder (odd k - s) is cropped from the end after it."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        before = max(kernel - stride, 0) // 2
        # output_padding extends the end where the full conv is shorter than TF's output (kernel < stride)
        super().__init__(c_in, c_out, kernel, stride, padding=before,
                         output_padding=max(stride + 2 * before - kernel, 0))

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        rows, cols = (n * s for n, s in zip(x.shape[-2:], self.stride))
        return y if y.shape[-2:] == (rows, cols) else y[..., :rows, :cols]


def strided_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: str) -> nn.Conv2d:
    """A 'same' conv of `kernel` and `stride`, padded TF's way (`tf`) or by kernel // 2 on both sides."""
    if padding == "tf":
        return SameConv2d(c_in, c_out, kernel, stride)
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2)


def doubling_deconv(c_in: int, c_out: int, kernel: int, padding: str) -> nn.ConvTranspose2d:
    """A stride-2 transposed conv whose output exactly doubles its input, for any kernel: TF's crop (`tf`) or
    (kernel - 1) // 2 cropped from both ends and the rest added at the end (`symmetric`)."""
    if padding == "tf":
        return SameConvTranspose2d(c_in, c_out, kernel, 2)
    crop = (kernel - 1) // 2
    return nn.ConvTranspose2d(c_in, c_out, kernel, 2, crop, 2 + 2 * crop - kernel)
