from __future__ import annotations

import copy
import io
import re

import pytest
import torch
import torch.nn as nn

from coordexp.nn import AddCoords, CoordConv1d, CoordConv2d, CoordConv3d, CoordConvTranspose2d

C = 3
SHAPES = {1: (7,), 2: (5, 8), 3: (3, 4, 6)}  # distinct sizes per axis catch wrong-axis scaling


def axis_coords(shape, k):
    """Expected k-th coordinate channel (k=0 -> xx along the last dim), built independently."""
    size = shape[-1 - k]
    line = torch.linspace(-1, 1, size) if size > 1 else torch.zeros(1)
    view = [1] * len(shape)
    view[-1 - k] = size
    return line.view(view).expand(shape)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("with_r", [False, True])
def test_output_shape(rank, with_r):
    layer = AddCoords(rank, with_r=with_r)
    x = torch.randn(2, C, *SHAPES[rank])
    out = layer(x)
    assert layer.extra_channels == rank + int(with_r)
    assert out.shape == (2, C + rank + int(with_r), *SHAPES[rank])
    assert torch.equal(out[:, :C], x)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_coordinate_values(rank):
    shape = SHAPES[rank]
    out = AddCoords(rank)(torch.zeros(2, C, *shape))
    for k in range(rank):
        chan = out[:, C + k]
        torch.testing.assert_close(chan, axis_coords(shape, k).expand(2, *shape))
        assert chan.min() == -1 and chan.max() == 1


def test_coordinate_values_2d_explicit():
    out = AddCoords(2)(torch.zeros(1, 1, 5, 8))
    xx, yy = out[0, 1], out[0, 2]
    torch.testing.assert_close(xx[0], torch.linspace(-1, 1, 8))
    assert torch.equal(xx, xx[:1].expand(5, 8))  # constant down each column
    torch.testing.assert_close(yy[:, 0], torch.linspace(-1, 1, 5))
    assert torch.equal(yy, yy[:, :1].expand(5, 8))  # constant along width


@pytest.mark.parametrize("r_center", [0.5, 0.0])
@pytest.mark.parametrize("rank", [2, 3])
def test_radius_channel(rank, r_center):
    shape = SHAPES[rank]
    out = AddCoords(rank, with_r=True, r_center=r_center)(torch.zeros(1, C, *shape))
    lines = [torch.linspace(-1, 1, s) for s in shape]
    grids = torch.meshgrid(*lines, indexing="ij")
    expected = torch.sqrt(sum((g - r_center) ** 2 for g in grids))
    torch.testing.assert_close(out[0, C + rank], expected)


@pytest.mark.parametrize("rank,shape", [(1, (1,)), (2, (1, 5)), (3, (4, 1, 1))])
def test_size_one_axis_is_zero(rank, shape):
    out = AddCoords(rank, with_r=True)(torch.zeros(1, C, *shape))
    assert not torch.isnan(out).any()
    for k in range(rank):
        if shape[-1 - k] == 1:
            assert torch.equal(out[0, C + k], torch.zeros(shape))


def test_cache_reused_per_shape():
    layer = AddCoords(2)
    layer(torch.zeros(2, C, 5, 8))
    cached = next(iter(layer._cache.values()))
    layer(torch.zeros(4, C, 5, 8))  # other batch size, same spatial shape
    assert len(layer._cache) == 1 and next(iter(layer._cache.values())) is cached
    layer(torch.zeros(2, C, 6, 8))
    assert len(layer._cache) == 2
    layer(torch.zeros(2, C, 5, 8, dtype=torch.float64))
    assert len(layer._cache) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_follows_input(dtype):
    out = AddCoords(2, with_r=True)(torch.zeros(1, C, 5, 8, dtype=dtype))
    assert out.dtype == dtype


def test_autocast():
    model = CoordConv2d(C, 4, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, C, 5, 8))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 5, 8)


def test_cache_filled_in_inference_mode_usable_for_training():
    model = CoordConv2d(C, 4, 3)
    with torch.inference_mode():
        model(torch.randn(1, C, 5, 8))
    x = torch.randn(1, C, 5, 8, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None


def test_gradient_reaches_input():
    model = CoordConv2d(C, 4, 3, padding=1)
    x = torch.randn(2, C, 5, 8, requires_grad=True)
    model(x).square().sum().backward()
    assert x.grad.shape == x.shape and x.grad.abs().sum() > 0


def test_param_count_matches_plain_conv():
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(CoordConv2d(C, 4, 3)) == count(nn.Conv2d(C + 2, 4, 3))
    assert count(CoordConv2d(C, 4, 3, with_r=True)) == count(nn.Conv2d(C + 3, 4, 3))


@pytest.mark.parametrize(
    "cls,shape,kwargs,out_shape",
    [
        (CoordConv1d, (7,), dict(padding=1), (7,)),
        (CoordConv2d, (5, 8), dict(padding=1), (5, 8)),
        (CoordConv2d, (5, 8), dict(), (3, 6)),
        (CoordConv3d, (3, 4, 6), dict(padding=1), (3, 4, 6)),
        (CoordConvTranspose2d, (5, 8), dict(stride=2, padding=1, output_padding=1), (10, 16)),
    ],
)
def test_conv_output_shapes(cls, shape, kwargs, out_shape):
    model = cls(C, 4, 3, with_r=True, **kwargs)
    assert model.conv.in_channels == C + model.add_coords.extra_channels
    assert model(torch.randn(2, C, *shape)).shape == (2, 4, *out_shape)


def test_zero_coord_weights_is_plain_conv():
    model = CoordConv2d(C, 4, 3, padding=1)
    plain = nn.Conv2d(C, 4, 3, padding=1)
    with torch.no_grad():
        model.conv.weight[:, C:] = 0
        plain.weight.copy_(model.conv.weight[:, :C])
        plain.bias.copy_(model.conv.bias)
    x = torch.randn(2, C, 5, 8)
    torch.testing.assert_close(model(x), plain(x))


@pytest.mark.parametrize("rank", [0, 4, -1])
def test_bad_rank(rank):
    with pytest.raises(ValueError, match=rf"got {rank}\b"):
        AddCoords(rank)


@pytest.mark.parametrize("rank,shape", [(2, (2, 3, 4)), (1, (2, 3, 4, 5)), (3, (2, 3, 4, 5))])
def test_bad_input_dims(rank, shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        AddCoords(rank)(torch.zeros(shape))


def test_repr():
    assert "rank=2, with_r=True, r_center=0.0" in repr(AddCoords(2, with_r=True, r_center=0.0))


def test_state_dict_and_save_load():
    assert AddCoords(2, with_r=True).state_dict() == {}
    model = CoordConv2d(C, 4, 3, padding=1)
    assert set(model.state_dict()) == {"conv.weight", "conv.bias"}
    x = torch.randn(2, C, 5, 8)
    expected = model(x)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded.add_coords._cache == {}  # derived data is not pickled
    torch.testing.assert_close(loaded(x), expected)
    clone = copy.deepcopy(model)
    torch.testing.assert_close(clone(x), expected)
    assert len(model.add_coords._cache) == 1  # deepcopy left the original's cache alone
