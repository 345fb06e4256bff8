"""Stacks of 1x1 convolutions (per-pixel Linears) with ReLU between them, as matrix products on (rows, channels).

One autograd node for the whole stack, its backward written out, masking each gradient in place. Same
parameters, same result as the layer-by-layer version up to floating-point rounding.

This is the one module that calls torch ops outside its public Python API, each because it measurably wins,
each behind a guard with a public fallback that computes the same thing:
- oneDNN's Linear with the ReLU fused in (`torch.ops.mkldnn._linear_pointwise`: no separate pass over the
  activations), taken only on x86-64 CPUs, where it is tested, for a dtype whose one-time probe in this process
  ran and matched the public ops (oneDNN cannot build it in bf16 on a CPU without native bf16); else addmm + relu_;
- ATen's in-place ReLU backward (`torch.ops.aten.threshold_backward.grad_input`: about 2x a masked_fill_, which
  builds a mask); else masked_fill_.
`PUBLIC_ONLY = True` forces the fallbacks (the tests run both sides).
"""
from __future__ import annotations

import functools
import logging
import math
import platform

import torch
from torch import Tensor

log = logging.getLogger(__name__)
PUBLIC_ONLY = False
FUSED_ARCHITECTURES = ("x86_64", "amd64")  # where the fused path is tested (CI, developers' machines)


def _fused_linear_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [], "")


def _public_linear_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return torch.relu_(torch.addmm(bias, x, weight.t()))


@functools.cache
def fused_works(dtype: torch.dtype) -> bool:
    """Whether the fused Linear + ReLU runs here in `dtype` and agrees with the public ops (probed once)."""
    if platform.machine().lower() not in FUSED_ARCHITECTURES or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=generator).to(dtype) for shape in ((64, 32), (48, 32), (48,)))
    try:
        fused = _fused_linear_relu(x, weight, bias)
    except (RuntimeError, AttributeError, NotImplementedError) as error:  # no such op, or no primitive for dtype
        log.debug("fused linear+relu unavailable in %s: %s", dtype, str(error).splitlines()[0])
        return False
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    return torch.allclose(fused.float(), _public_linear_relu(x, weight, bias).float(), rtol=tolerance, atol=tolerance)


def linear_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """relu(x @ weight.T + bias) for x (M, in): fused where the guard allows, else public ops."""
    if not PUBLIC_ONLY and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) \
            and fused_works(x.dtype):
        return _fused_linear_relu(x, weight, bias)
    return _public_linear_relu(x, weight, bias)


def relu_backward_(grad: Tensor, relu_out: Tensor) -> Tensor:
    """Zero `grad` in place where the ReLU's output `relu_out` is 0 (its gradient there); returns `grad`."""
    if PUBLIC_ONLY:
        return grad.masked_fill_(relu_out <= 0, 0)
    return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=grad)


def fused_flop_counts() -> dict:
    """FLOPs of the fused op for torch's FlopCounterMode (not in its registry): x (M, in) @ w.T (in, out)."""
    return {torch.ops.mkldnn._linear_pointwise: lambda x_shape, w_shape, *args, **kwargs:
            2 * math.prod(x_shape) * w_shape[0]} if hasattr(torch.ops.mkldnn, "_linear_pointwise") else {}


class _LinearReLUStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        inputs = [x]
        for weight, bias in zip(weights[:-1], biases[:-1]):
            inputs.append(linear_relu(inputs[-1], weight, bias))
        ctx.save_for_backward(*inputs, *weights)
        return torch.addmm(biases[-1], inputs[-1], weights[-1].t())

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        inputs, weights = saved[:len(saved) // 2], saved[len(saved) // 2:]
        grads: list[Tensor] = []
        for i in reversed(range(len(weights))):
            grads = [grad.t() @ inputs[i], grad.sum(0)] + grads
            grad = grad @ weights[i]
            if i > 0:  # the layer's input came out of a ReLU; masked in place, while `grad` is still in cache
                relu_backward_(grad, inputs[i])
        return (grad, *grads)


def linear_relu_stack(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """x (..., C) through Linear layers `weights[i]` (out, in) + `biases[i]`, ReLU between them (none after
    the last), as one fused autograd node. Parameters are cast to x's dtype (bf16 under autocast)."""
    params = [p.to(x.dtype) for pair in zip(weights, biases) for p in pair]
    out = _LinearReLUStack.apply(x.reshape(-1, x.shape[-1]), *params)
    return out.view(*x.shape[:-1], out.shape[-1])
