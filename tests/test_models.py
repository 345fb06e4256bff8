import math

import pytest
import torch
from torch import nn

from coordexp.models import build_model, count_params
from conftest import make_cfg

# Trainable parameter counts of the paper's models (read off the authors' code).
PAPER_COUNTS = [
    (("task=classification", "model=coordconv", "model.mul=1"), 7553),
    (("task=classification", "model=conv", "model.fs=3", "model.mul=2"), 409921),
    (("task=classification", "model=conv", "model.fs=2", "model.mul=1"), 46465),
    (("task=rendering", "model=conv", "model.fs=3", "model.mul=2"), 409921),
    (("task=rendering", "model=coordconv", "model.fs=3", "model.mul=1"), 11850),
    # the authors' renderer at their sweep's mul=2, fs=1: the painter stays 32/32/64/64 (issue 10)
    (("task=rendering", "model=coordconv", "model.fs=1", "model.mul=2"), 9490),
    (("task=rendering", "model=coordconv", "model.fs=1", "model.mul=2", "model.painter_width=scaled"), 31378),
    (("task=regression", "model=coordconv"), 906),
    (("task=regression", "model=conv", "model.regressor=uniform", "model.mul=1"), 72850),
    (("task=regression", "model=conv", "model.regressor=quarter", "model.mul=1"), 12914),
]


def model_for(*overrides):
    cfg = make_cfg(*overrides)
    return build_model(cfg.model, cfg.task.name, cfg.data.canvas), cfg


@pytest.mark.parametrize("overrides, expected", PAPER_COUNTS)
def test_parameter_counts_match_the_paper(overrides, expected):
    model, _ = model_for(*overrides)
    assert count_params(model) == expected


def test_deconv_with_fs4_mul3_is_about_1_63m():
    model, _ = model_for("task=classification", "model=conv", "model.fs=4", "model.mul=3")
    assert 1.60e6 < count_params(model) < 1.66e6


def test_conv_regressor_follows_the_split_by_default():
    uniform, _ = model_for("task=regression", "model=conv", "split=uniform", "model.mul=1")
    quarter, _ = model_for("task=regression", "model=conv", "split=quarter", "model.mul=1")
    assert (count_params(uniform), count_params(quarter)) == (72850, 12914)


def test_with_r_adds_one_input_channel():
    plain, _ = model_for("task=classification", "model=coordconv", "model.mul=1")
    with_r, _ = model_for("task=classification", "model=coordconv", "model.mul=1", "model.with_r=true")
    assert count_params(with_r) - count_params(plain) == 32  # one more input to the first 1x1 conv of 32


@pytest.mark.parametrize("family", ["conv", "coordconv", "mlp", "coordmlp"])
@pytest.mark.parametrize("task", ["classification", "regression", "rendering"])
def test_output_shapes(task, family):
    small = ["model.hidden=16"] if "mlp" in family else []
    model, cfg = model_for(f"task={task}", f"model={family}", *small)
    model.eval()
    if task == "regression":
        out = model(torch.zeros(3, 1, 64, 64))
        assert out.shape == (3, 2)
    else:
        out = model(torch.rand(3, 2) * 2 - 1)
        assert out.shape == (3, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("fs", [1, 2, 3, 4, 5])
def test_deconv_painter_reaches_the_canvas_for_every_filter_size(fs):
    model, _ = model_for("task=classification", "model=conv", f"model.fs={fs}", "model.mul=1")
    model.eval()
    assert model(torch.zeros(2, 2)).shape == (2, 64, 64)


def test_models_follow_the_canvas_size():
    for family in ("conv", "coordconv", "mlp", "coordmlp"):
        small = ["model.hidden=8"] if "mlp" in family else []
        model, _ = model_for("task=classification", f"model={family}", "data.canvas=32", "data.square=5", *small)
        model.eval()
        assert model(torch.zeros(2, 2)).shape == (2, 32, 32)


def test_renderer_softmax_centre_map_is_the_papers_unscaled_one():
    model, _ = model_for("task=rendering", "model=coordconv", "model.centre_map=softmax")
    seen = []
    model.paint[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(torch.zeros(3, 2))
    torch.testing.assert_close(seen[0].sum((1, 2, 3)), torch.ones(3))


@pytest.mark.parametrize("seed", range(5))
def test_renderer_paint_convs_see_their_input_over_their_biases(seed):
    # the centre map is a density (mean 1 per pixel): unscaled (1/4096 per pixel) the first paint conv's
    # biases swamped its input, its units died before the map sharpened, and some seeds never painted
    torch.manual_seed(seed)
    model, _ = model_for("task=rendering", "model=coordconv")
    first = model.paint[0]
    seen = []
    first.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    with torch.no_grad():
        model(torch.rand(4, 2) * 2 - 1)
    centre_map, out = seen[0]
    torch.testing.assert_close(centre_map.mean((1, 2, 3)), torch.ones(4))
    input_term = out - first.bias[:, None, None]
    assert input_term.abs().mean() > 0.2 * first.bias.abs().mean()


def test_renderer_painter_width_fixed_keeps_the_painter_of_mul_1():
    fixed, _ = model_for("task=rendering", "model=coordconv", "model.mul=3")
    scaled, _ = model_for("task=rendering", "model=coordconv", "model.mul=3", "model.painter_width=scaled")
    painter, _ = model_for("task=classification", "model=coordconv", "model.mul=1")
    assert count_params(fixed.painter) == count_params(painter) == 7553
    assert count_params(fixed.paint) == count_params(scaled.paint)
    assert count_params(scaled.painter) > count_params(fixed.painter)


@pytest.mark.parametrize("overrides", [("task=classification", "model=conv", "model.mul=2"),
                                       ("task=regression", "model=conv", "model.regressor=uniform"),
                                       ("task=rendering", "model=coordconv"),
                                       ("task=regression", "model=mlp", "model.hidden=64")])
def test_authors_init_is_he_normal_convs_glorot_dense_zero_biases(overrides):
    torch.manual_seed(0)
    model, _ = model_for(*overrides, "model.init=authors")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert layers and all(not m.bias.any() for m in layers)
    for m in layers:
        w = m.weight.detach()
        if isinstance(m, nn.Linear):  # TF's default for a Dense layer given no initializer: glorot_uniform
            bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))
            assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
            continue
        # he_normal: variance 2 / fan_in, fan_in = in x kh x kw (conv), out x kh x kw (transposed, as TF's)
        std = math.sqrt(2 / w[0].numel())
        assert w.abs().max() <= 2 * std / 0.8796 + 1e-6  # truncated at 2 std of the underlying normal
        if w.numel() >= 1000:
            assert w.std().item() == pytest.approx(std, rel=0.1)


def test_torch_init_is_pytorchs_default_and_the_authors_about_2_4x_larger():
    torch.manual_seed(0)
    torch_model, _ = model_for("task=classification", "model=conv", "model.mul=2")
    torch.manual_seed(0)
    authors, _ = model_for("task=classification", "model=conv", "model.mul=2", "model.init=authors")
    first_torch, first_authors = torch_model.net[3].weight, authors.net[3].weight  # a 128 -> 128 deconv
    assert torch_model.net[0].bias.abs().sum() > 0  # PyTorch's non-zero biases
    assert (first_authors.std() / first_torch.std()).item() == pytest.approx(math.sqrt(6), rel=0.1)


# model.coord_layers: which convs take the coordinate channels (2 more inputs each); first is the paper's
COORD_LAYER_COUNTS = [
    ("regression", "first", 906), ("regression", "last", 926), ("regression", "all", 1118),
    ("classification", "first", 7553), ("classification", "last", 7491), ("classification", "all", 7875),
    ("rendering", "first", 11850), ("rendering", "last", 11804), ("rendering", "all", 13054),
]


@pytest.mark.parametrize("task, coord_layers, expected", COORD_LAYER_COUNTS)
def test_coord_layers_parameter_counts(task, coord_layers, expected):
    model, _ = model_for(f"task={task}", "model=coordconv", f"model.coord_layers={coord_layers}")
    assert count_params(model) == expected


@pytest.mark.parametrize("coord_layers, widened", [("first", [0]), ("last", [4]), ("all", [0, 1, 2, 3, 4])])
def test_coord_layers_feed_the_coordinates_to_those_convs(coord_layers, widened):
    model, _ = model_for("task=regression", "model=coordconv", f"model.coord_layers={coord_layers}")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    inputs = [conv.in_channels for conv in convs]
    plain = [1, 8, 8, 8, 8]
    assert inputs == [c + 2 * (i in widened) for i, c in enumerate(plain)]
    seen = []
    for conv in convs:
        conv.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    model(torch.zeros(2, 1, 64, 64))
    assert seen == inputs


@pytest.mark.parametrize("task", ["classification", "rendering"])
@pytest.mark.parametrize("coord_layers", ["last", "all"])
def test_coord_layers_fast_and_plain_paths_agree(task, coord_layers):
    torch.manual_seed(0)
    fast, _ = model_for(f"task={task}", "model=coordconv", f"model.coord_layers={coord_layers}")
    plain, _ = model_for(f"task={task}", "model=coordconv", f"model.coord_layers={coord_layers}", "model.fast=false")
    plain.load_state_dict(fast.state_dict())
    coords = torch.rand(3, 2) * 2 - 1
    torch.testing.assert_close(fast(coords), plain(coords))


def test_pixel_coords_are_raw_indices_and_change_only_the_coordinate_channels():
    normalized, _ = model_for("task=regression", "model=coordconv")
    pixels, _ = model_for("task=regression", "model=coordconv", "model.coords=pixels")
    assert count_params(normalized) == count_params(pixels) == 906
    channels = pixels.add_coords(torch.zeros(1, 1, 4, 6))
    torch.testing.assert_close(channels[0, 1], torch.arange(6.0).expand(4, 6))  # xx: the column index
    torch.testing.assert_close(channels[0, 2], torch.arange(4.0)[:, None].expand(4, 6))  # yy: the row index
    assert normalized.add_coords(torch.zeros(1, 1, 4, 6))[0, 1:].abs().max() == 1


def test_coord_layers_and_coords_are_keys_of_coordconv_only():
    from coordexp.config import ConfigError
    with pytest.raises(ConfigError, match="coord_layers.*model=coordconv"):
        make_cfg("task=regression", "model=conv", "model.coord_layers=all")
    with pytest.raises(ConfigError, match="model.coord_layers='middle' is invalid: valid choices: first, last, all"):
        make_cfg("task=regression", "model=coordconv", "model.coord_layers=middle")


# --- a key the model does not read is refused when typed -----------------------------------------------

VARIED = {"mul": 2, "fs": 2, "padding": "symmetric", "regressor": "quarter"}  # each against the default


@pytest.mark.parametrize("task", ["classification", "regression", "rendering"])
@pytest.mark.parametrize("family", ["conv", "coordconv"])
@pytest.mark.parametrize("split", ["uniform", "quarter"])
def test_the_keys_called_unused_are_exactly_those_that_change_nothing(task, family, split):
    from coordexp.config import unused_model_keys
    base = make_cfg(f"task={task}", f"model={family}", f"split={split}")
    reference = build_fixed(base)
    for key, value in VARIED.items():
        if key not in base.model:
            continue
        cfg = make_cfg(f"task={task}", f"model={family}", f"split={split}")
        if cfg.model[key] == value:
            continue
        cfg.model[key] = value
        changed = build_fixed(cfg) != reference
        assert changed == (f"model.{key}" not in unused_model_keys(cfg)), (key, value)


def build_fixed(cfg) -> tuple:
    """The model's parameter shapes and its output on a fixed input, built from a fixed seed."""
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas).eval()
    canvas = cfg.data.canvas
    x = torch.rand(2, 1, canvas, canvas) if cfg.task.name == "regression" else torch.rand(2, 2)
    with torch.no_grad():
        out = model(x)
    return tuple(p.shape for p in model.parameters()), round(float(out.double().sum()), 6)


@pytest.mark.parametrize("overrides, key", [
    (["task=regression", "model=coordconv", "model.mul=2"], "model.mul"),
    (["task=regression", "model=coordconv", "model.fs=2"], "model.fs"),
    (["task=classification", "model=coordconv", "model.fs=2"], "model.fs"),
    (["task=regression", "model=conv", "split=uniform", "model.padding=symmetric"], "model.padding"),
    (["task=classification", "model=conv", "model.regressor=quarter"], "model.regressor"),
])
def test_a_typed_key_the_model_does_not_read_is_refused_by_name(overrides, key):
    from coordexp.config import ConfigError, check
    with pytest.raises(ConfigError, match=f"^{key}=.* has no effect with task=.* model=.*: that model does not read it"):
        check(make_cfg(*overrides), overrides)
