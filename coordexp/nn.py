"""CoordConv layers (Liu et al. 2018, "An intriguing failing of convolutional
neural networks and the CoordConv solution"). A CoordConv layer is an ordinary
convolution whose input is first extended with extra channels holding each
pixel's own coordinates, linearly scaled to [-1, 1] along every spatial axis
(optionally plus a radius channel). This lets the filters learn functions of
absolute position while keeping translation equivariance available: if the
weights on the coordinate channels are zero it is exactly a plain convolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "AddCoords",
    "tiled_linear",
    "CoordConv1d",
    "CoordConv2d",
    "CoordConv3d",
    "CoordConvTranspose2d",
]

_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}


class AddCoords(nn.Module):
    """Concatenate coordinate channels after the input channels.

    Input (N, C, *spatial) with len(spatial) == rank. Output (N, C + extra_channels,
    *spatial) with channels [xx] (rank 1), [xx, yy] (rank 2) or [xx, yy, zz] (rank 3),
    where xx varies along the last dim, yy along dim -2 and zz along dim -3. Each
    coordinate is 2 * i / (S - 1) - 1 for index i on an axis of size S (0 if S == 1),
    each axis using its own size.

    With normalized=False the coordinates are the raw pixel indices i instead (0 .. S - 1): the same
    position then reads differently on a canvas of another size.

    With with_r=True one more channel rr = sqrt(sum_k (c_k - r_center) ** 2) is added.
    r_center=0.5 follows the listing printed in the paper
    (rr = sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)); r_center=0.0 follows the
    authors' released code (rr = sqrt(xx ** 2 + yy ** 2)).

    Coordinate channels are built once per (spatial shape, device, dtype) and kept
    in a plain dict cache, not in buffers, so state_dict stays empty and the module
    works for any input size.
    """

    def __init__(self, rank: int, with_r: bool = False, r_center: float = 0.5, normalized: bool = True):
        super().__init__()
        if rank not in (1, 2, 3):
            raise ValueError(f"rank must be one of (1, 2, 3), got {rank!r}")
        self.rank = rank
        self.with_r = with_r
        self.r_center = r_center
        self.normalized = normalized
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def extra_channels(self) -> int:
        return self.rank + int(self.with_r)

    def coords(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The coordinate channels for a `shape` input, (1, extra_channels, *shape), cached."""
        key = (shape, device, dtype)
        coords = self._cache.get(key)
        if coords is None:
            # built once in float64 on CPU (MPS lacks float64), then cast: exact rounding for any dtype
            axes = [
                torch.arange(s, dtype=torch.float64) if not self.normalized
                else torch.linspace(-1.0, 1.0, s, dtype=torch.float64) if s > 1 else torch.zeros(s, dtype=torch.float64)
                for s in shape
            ]
            grids = torch.meshgrid(*axes, indexing="ij")
            chans = list(reversed(grids))  # xx (last dim) first, then yy, zz
            if self.with_r:
                chans.append(torch.sqrt(sum((c - self.r_center) ** 2 for c in chans)))
            coords = torch.stack(chans).unsqueeze(0).to(device=device, dtype=dtype)
            self._cache[key] = coords
        return coords

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.rank + 2:
            raise ValueError(
                f"AddCoords(rank={self.rank}) expects input of shape (N, C, {_SPATIAL_NAMES[self.rank]}), "
                f"got shape {tuple(x.shape)}"
            )
        coords = self.coords(tuple(x.shape[2:]), x.device, x.dtype)
        return torch.cat([x, coords.expand(x.shape[0], -1, *x.shape[2:])], dim=1)

    def pixels(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The coordinate channels as one row per pixel, (prod(shape), extra_channels), pixels in row-major order."""
        return self.coords(shape, device, dtype).flatten(2)[0].t()

    def extra_repr(self) -> str:
        return f"rank={self.rank}, with_r={self.with_r}, r_center={self.r_center}, normalized={self.normalized}"

    def __getstate__(self):
        # the cache is derived data: don't pickle it, it rebuilds on the next forward
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


def tiled_linear(values: torch.Tensor, pixels: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear on the concatenation [values[n], pixels[p]] for every sample n and pixel p, (N, P, out).

    This is a 1x1 CoordConv (or a Linear applied per pixel) on a per-sample vector tiled over the canvas,
    without building the tiled input: the product splits into a per-sample term, values (N, V) @ W[:, :V].T,
    computed once per sample, and a per-pixel term, pixels (P, C) @ W[:, V:].T, computed once per canvas,
    broadcast-added. `weight` is (out, V + C), the layout of the 1x1 convolution it replaces.
    """
    per_sample = F.linear(values, weight[:, :values.shape[1]], bias)
    per_pixel = F.linear(pixels, weight[:, values.shape[1]:])
    return per_sample[:, None, :] + per_pixel[None]


class _CoordConvNd(nn.Module):
    """AddCoords followed by a convolution; subclasses set `rank` and `conv_cls`."""

    rank: int
    conv_cls: type[nn.Module]

    def __init__(self, in_channels: int, out_channels: int, kernel_size, with_r: bool = False,
                 r_center: float = 0.5, normalized: bool = True, **conv_kwargs):
        super().__init__()
        self.add_coords = AddCoords(self.rank, with_r=with_r, r_center=r_center, normalized=normalized)
        self.conv = self.conv_cls(in_channels + self.add_coords.extra_channels, out_channels,
                                  kernel_size, **conv_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.add_coords(x))


class CoordConv1d(_CoordConvNd):
    """nn.Conv1d on the input plus an xx coordinate channel (and rr if with_r)."""

    rank, conv_cls = 1, nn.Conv1d


class CoordConv2d(_CoordConvNd):
    """nn.Conv2d on the input plus xx, yy coordinate channels (and rr if with_r)."""

    rank, conv_cls = 2, nn.Conv2d


class CoordConv3d(_CoordConvNd):
    """nn.Conv3d on the input plus xx, yy, zz coordinate channels (and rr if with_r)."""

    rank, conv_cls = 3, nn.Conv3d


class CoordConvTranspose2d(_CoordConvNd):
    """nn.ConvTranspose2d on the input plus xx, yy coordinate channels (and rr if with_r)."""

    rank, conv_cls = 2, nn.ConvTranspose2d
