"""The paper's models for every task and family, built from the `model` config.

Families: `conv` (deconv painter / conv regressor), `coordconv` (CoordConv painter, renderer, regressor),
`mlp` and `coordmlp`. Painters map (N, 2) coordinates to (N, H, W) logits; regressors map (N, 1, H, W)
one-hot images to (N, 2) coordinates in canvas units (x / canvas, y / canvas).
"""
from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from coordexp.nn import AddCoords, tiled_linear
from coordexp.pointwise import linear_relu_stack
from coordexp.same import doubling_deconv, strided_conv

CONV_LAYERS = (nn.Conv2d, nn.ConvTranspose2d)  # every convolution the models use (the authors' he_normal, L2)


def tile(coords: Tensor, height: int, width: int) -> Tensor:
    """(N, 2) coordinates as a (N, 2, H, W) map, constant over the canvas (a view, no copy)."""
    return coords[:, :, None, None].expand(-1, -1, height, width)


def coord_positions(n_convs: int, coord_layers: str) -> tuple[int, ...]:
    """Which of a model's `n_convs` convolutions take the coordinate channels: the first (the paper's), the
    last, or all."""
    return {"first": (0,), "last": (n_convs - 1,), "all": tuple(range(n_convs))}[coord_layers]


def conv_stack(channels: list[int], size: int, padding, extra: int = 0, coord_at: tuple[int, ...] = (),
               relu: bool = True) -> nn.Sequential:
    """size x size convolutions through `channels`, ReLU between them (none after the last) if `relu`; the
    convolutions numbered in `coord_at` take `extra` more input channels (the coordinates)."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(nn.Conv2d(c_in + extra * (i in coord_at), c_out, size, padding=padding))
        if relu and i < len(channels) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def with_coords(layers: nn.Sequential, x: Tensor, add_coords: AddCoords, coord_at: tuple[int, ...]) -> Tensor:
    """`layers` applied to x, the convolutions numbered in `coord_at` given the coordinate channels too."""
    n_conv = 0
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            x = add_coords(x) if n_conv in coord_at else x
            n_conv += 1
        x = layer(x)
    return x


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers through `sizes` with LayerNorm + ReLU after every hidden layer."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class DeconvPainter(nn.Module):
    """The paper's deconv baseline: (x, y) as a 1x1 map, stride-2 transposed convs doubling up to the canvas.

    Channels 64m, 64m, 64m, 32m, 32m, 1 for a 64 canvas (one more 64m layer per doubling of the canvas),
    BatchNorm + ReLU after all but the last. 409,921 params at fs=3, mul=2; 46,465 at fs=2, mul=1. `padding`
    (coordexp.same): which 2n rows and columns of each full transposed conv are kept (tf: the authors').
    """

    def __init__(self, canvas: int, mul: int, fs: int, padding: str = "tf"):
        super().__init__()
        n_layers = int(math.log2(canvas))
        channels = [2] + [64 * mul] * (n_layers - 3) + [32 * mul] * 2 + [1]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(doubling_deconv(c_in, c_out, fs, padding))
            if i < n_layers - 1:
                layers += [nn.BatchNorm2d(c_out, momentum=0.1, eps=1e-5), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, coords: Tensor) -> Tensor:
        return self.net(coords[:, :, None, None]).squeeze(1)


class CoordConvPainter(nn.Module):
    """The paper's CoordConv painter: (x, y) tiled over the canvas plus coordinate channels, 1x1 convs.

    Channels 32m, 32m, 64m, 64m, 1 with ReLU between: 7,553 params at mul=1. `coord_at` numbers the convs
    that take the coordinate channels (the first only: the paper's). With `fast` and the coordinates at the
    first conv only, the same parameters evaluated as matrix products on (N, pixels, channels): the first
    layer split by `tiled_linear` so the tiled input is never built, the rest one fused `linear_relu_stack`;
    otherwise the plain tile + AddCoords + nn.Conv2d stack.
    """

    def __init__(self, canvas: int, mul: int, add_coords: AddCoords, fast: bool, coord_at: tuple[int, ...] = (0,)):
        super().__init__()
        self.canvas, self.coord_at, self.add_coords = canvas, coord_at, add_coords
        self.fast = fast and coord_at == (0,)  # the fused path holds for the paper's placement only
        self.net = conv_stack([2, 32 * mul, 32 * mul, 64 * mul, 64 * mul, 1], 1, 0, add_coords.extra_channels,
                              coord_at)

    def forward(self, coords: Tensor) -> Tensor:
        size = (self.canvas, self.canvas)
        if not self.fast:
            return with_coords(self.net, tile(coords, *size), self.add_coords, self.coord_at).squeeze(1)
        first, *rest = self.net[0::2]  # the 1x1 convs (ReLU between them)
        pixels = self.add_coords.pixels(size, coords.device, coords.dtype)
        features = torch.relu(tiled_linear(coords, pixels, first.weight.flatten(1), first.bias))
        logits = linear_relu_stack(features, [c.weight.flatten(1) for c in rest], [c.bias for c in rest])
        return logits.view(-1, *size)


class CoordConvRenderer(nn.Module):
    """The paper's CoordConv renderer: a CoordConv painter, a softmax over the canvas (a sharpened centre
    map), then fs x fs convs 8m, 8m, 16m, 16m, 1 with ReLU between that paint the square.

    With centre_map "density" the map is scaled by the number of pixels (mean 1): the same function class
    and parameters, but trainable for every seed; "softmax" is the paper's (2 of 5 seeds collapsed or stalled).
    With painter_width "fixed" the painter has the authors' widths 32, 32, 64, 64 whatever `mul` is (only the
    paint convs scale); "scaled" multiplies them by `mul` too.

    11,850 params at mul=1, fs=3; at mul=2, fs=1: 9,490 fixed (the authors'), 31,378 scaled.
    The convs need fs >= 2 to paint a square at all (the authors' sweep used fs=1). With `fast`, the painter
    takes its fast path.
    """

    def __init__(self, canvas: int, mul: int, fs: int, add_coords: AddCoords, fast: bool, centre_map: str,
                 painter_width: str, coord_at: tuple[int, ...] = (0,)):
        super().__init__()
        self.scale = canvas * canvas if centre_map == "density" else 1
        # convs 0-4 are the painter's, 5-9 the paint convs
        self.painter = CoordConvPainter(canvas, mul if painter_width == "scaled" else 1, add_coords, fast,
                                        tuple(i for i in coord_at if i < 5))
        self.add_coords, self.paint_coord_at = add_coords, tuple(i - 5 for i in coord_at if i >= 5)
        self.paint = conv_stack([1, 8 * mul, 8 * mul, 16 * mul, 16 * mul, 1], fs, "same", add_coords.extra_channels,
                                self.paint_coord_at)

    def forward(self, coords: Tensor) -> Tensor:
        logits = self.painter(coords)
        # the softmax as a density (x pixels: 1 per pixel when uniform): at 1/4096 per pixel the paint convs'
        # biases swamp their input, units die before the map sharpens, and some seeds never paint at all
        centre_map = torch.softmax(logits.flatten(1).float(), dim=1).view_as(logits) * self.scale
        return with_coords(self.paint, centre_map[:, None].to(logits.dtype), self.add_coords,
                           self.paint_coord_at).squeeze(1)


class ConvRegressorUniform(nn.Module):
    """The authors' conv regressor for the uniform split: three [3x3 conv, ReLU, 2x2 max-pool] blocks,
    a 3x3 conv, dense 64, dense 2. 72,850 params at mul=1 on a 64 canvas."""

    def __init__(self, canvas: int, mul: int):
        super().__init__()
        c = 16 * mul
        blocks: list[nn.Module] = []
        for c_in in (1, c, c):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(
            *blocks, nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(c * (canvas // 8) ** 2, 64), nn.ReLU(), nn.Linear(64, 2),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class ConvRegressorQuarter(nn.Module):
    """The authors' conv regressor for the quarter split: strided convs with BatchNorm, ReLU, global average
    pool. 12,914 params at mul=1. `padding` (coordexp.same): how its 'same' convs pad (tf: the authors')."""

    def __init__(self, mul: int, padding: str = "tf"):
        super().__init__()
        c = 16 * mul

        def conv(c_in, c_out, k, stride):
            return strided_conv(c_in, c_out, k, stride, padding)

        self.net = nn.Sequential(
            conv(1, c, 5, 2), nn.ReLU(), conv(c, c, 1, 1), nn.ReLU(), nn.BatchNorm2d(c),
            conv(c, c, 3, 1), nn.ReLU(), conv(c, c, 3, 2), nn.ReLU(),
            conv(c, c, 3, 2), nn.BatchNorm2d(c), nn.ReLU(), conv(c, c, 3, 2), nn.ReLU(),
            conv(c, c, 1, 1), nn.ReLU(), conv(c, c, 3, 2), nn.ReLU(), conv(c, 2, 3, 1), nn.ReLU(),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).mean(dim=(2, 3))


class CoordConvRegressor(nn.Module):
    """The paper's CoordConv regressor: one-hot + coordinate channels, 1x1 convs 8, 8, 8, 3x3 convs 8, 2,
    global max-pool; no nonlinearity. 906 params with the coordinates at the first conv (the paper's), 926 at
    the last, 1,118 at every conv (`coord_at` numbers them). Max-pooling matters: averaging collapses to the
    centre. Fully convolutional: it takes any canvas. (Composing the three linear 1x1 convs into one map per
    step was measured on the CPU: no gain.)
    """

    def __init__(self, add_coords: AddCoords, coord_at: tuple[int, ...] = (0,)):
        super().__init__()
        self.add_coords, self.coord_at = add_coords, coord_at
        self.net = nn.Sequential(
            *conv_stack([1, 8, 8, 8], 1, 0, add_coords.extra_channels, coord_at, relu=False),
            *conv_stack([8, 8, 2], 3, 1, add_coords.extra_channels, tuple(i - 3 for i in coord_at), relu=False),
        )

    def forward(self, images: Tensor) -> Tensor:
        return with_coords(self.net, images, self.add_coords, self.coord_at).amax(dim=(2, 3))


class MLPRegressor(nn.Module):
    """Flattened image (with coordinate channels for CoordMLP) -> hidden layers -> 2, sigmoid output."""

    def __init__(self, canvas: int, hidden: int, depth: int, add_coords: AddCoords | None):
        super().__init__()
        self.add_coords = add_coords
        channels = 1 + (add_coords.extra_channels if add_coords else 0)
        self.net = mlp([channels * canvas * canvas] + [hidden] * depth + [2])

    def forward(self, images: Tensor) -> Tensor:
        if self.add_coords is not None:
            images = self.add_coords(images)
        return torch.sigmoid(self.net(images.flatten(1)))


class MLPPainter(nn.Module):
    """(x, y) -> hidden layers -> one logit per pixel of the canvas."""

    def __init__(self, canvas: int, hidden: int, depth: int):
        super().__init__()
        self.canvas = canvas
        self.net = mlp([2] + [hidden] * depth + [canvas * canvas])

    def forward(self, coords: Tensor) -> Tensor:
        return self.net(coords).view(-1, self.canvas, self.canvas)


class CoordMLPPainter(nn.Module):
    """CoordMLP for painting: the same MLP applied at every pixel to (x, y, xx, yy[, rr]) -> one logit.

    With `fast`, the first Linear is split by `tiled_linear` so the tiled input is never built.
    """

    def __init__(self, canvas: int, hidden: int, depth: int, with_r: bool, r_center: float, fast: bool):
        super().__init__()
        self.canvas, self.fast = canvas, fast
        self.add_coords = AddCoords(2, with_r=with_r, r_center=r_center)
        self.net = mlp([2 + self.add_coords.extra_channels] + [hidden] * depth + [1])

    def forward(self, coords: Tensor) -> Tensor:
        size = (self.canvas, self.canvas)
        if not self.fast:
            features = self.add_coords(tile(coords, *size))  # (N, C, H, W)
            return self.net(features.permute(0, 2, 3, 1)).squeeze(-1)
        first = self.net[0]
        pixels = self.add_coords.pixels(size, coords.device, coords.dtype)
        return self.net[1:](tiled_linear(coords, pixels, first.weight, first.bias)).view(-1, *size)


def he_normal_(weight: Tensor) -> None:
    """Keras' he_normal as TF 1.13 draws it: a normal truncated at 2 std, scaled to variance 2 / fan_in.

    fan_in is weight[0].numel() for nn.Conv2d (in x kh x kw) and for nn.ConvTranspose2d (out x kh x kw,
    which is what TF computes from its transposed kernel's (kh, kw, out, in) shape).
    """
    std = math.sqrt(2.0 / weight[0].numel()) / 0.87962566103423978  # the std of a unit normal cut at +-2
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def init_like_authors(model: nn.Module) -> None:
    """The authors' initialisation: he_normal conv kernels (every conv they build passes it), glorot_uniform
    Dense/Linear kernels (TF's default: their Dense layers pass none), zero biases; norms keep ones/zeros."""
    for module in model.modules():
        if isinstance(module, CONV_LAYERS):
            he_normal_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(cfg: DictConfig, task: str, canvas: int) -> nn.Module:
    """The model of family `cfg.name` for `task`, with the knobs in `cfg`; `cfg.init` picks its initialisation
    and `cfg.fast` the fast paths."""
    model = _build(cfg, task, canvas)
    if cfg.init == "authors":
        init_like_authors(model)
    if cfg.fast:  # channels-last kernels make oneDNN / cuDNN run every convolution channels-last (1.3-2x on CPU)
        model.to(memory_format=torch.channels_last)
    return model


def _build(cfg: DictConfig, task: str, canvas: int) -> nn.Module:
    family = cfg.name
    coords = dict(with_r=cfg.with_r, r_center=cfg.r_center)
    if family == "coordconv":
        add_coords = AddCoords(2, **coords, normalized=cfg.coords == "normalized")
        n_convs = 10 if task == "rendering" else 5  # the renderer: its painter's 5, then its 5 paint convs
        placed = dict(add_coords=add_coords, coord_at=coord_positions(n_convs, cfg.coord_layers))
    if task == "regression":
        if family == "conv":
            return ConvRegressorUniform(canvas, cfg.mul) if cfg.regressor == "uniform" else ConvRegressorQuarter(cfg.mul, cfg.padding)
        if family == "coordconv":
            return CoordConvRegressor(**placed)
        add_coords = AddCoords(2, **coords) if family == "coordmlp" else None
        return MLPRegressor(canvas, cfg.hidden, cfg.depth, add_coords)
    if family == "conv":
        return DeconvPainter(canvas, cfg.mul, cfg.fs, cfg.padding)
    if family == "coordconv":
        if task == "rendering":
            return CoordConvRenderer(canvas, cfg.mul, cfg.fs, **placed, fast=cfg.fast, centre_map=cfg.centre_map,
                                     painter_width=cfg.painter_width)
        return CoordConvPainter(canvas, cfg.mul, **placed, fast=cfg.fast)
    if family == "mlp":
        return MLPPainter(canvas, cfg.hidden, cfg.depth)
    return CoordMLPPainter(canvas, cfg.hidden, cfg.depth, **coords, fast=cfg.fast)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
