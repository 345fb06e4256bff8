"""TF's 'same' padding for strided convs and transposed convs (coordexp.same) against references built from
the full layer: every kernel size 2..5 (and 1, 6), odd and even inputs, the models' parameter counts kept."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_cfg
from coordexp.models import ConvRegressorQuarter, DeconvPainter, build_model, count_params
from coordexp.same import SameConv2d, SameConvTranspose2d, doubling_deconv, strided_conv, tf_pads

KERNELS = [1, 2, 3, 4, 5, 6]


def full_transposed(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int) -> np.ndarray:
    """The full transposed conv by scattering each input pixel's kernel: (C_in, n, n) -> (C_out, L, L),
    L = (n - 1) s + k, written out in numpy so it shares nothing with torch's op."""
    c_in, n, _ = x.shape
    _, c_out, k, _ = w.shape
    out = np.zeros((c_out, (n - 1) * s + k, (n - 1) * s + k))
    for i in range(n):
        for j in range(n):
            out[:, i * s:i * s + k, j * s:j * s + k] += np.einsum("c,cokl->okl", x[:, i, j], w)
    return out + b[:, None, None]


def tf_crop(full: np.ndarray, b: np.ndarray, n: int, k: int, s: int) -> np.ndarray:
    """TF's 'same' output of a transposed conv: n * s rows and columns of the full one from (k - s) // 2 (the
    conv it transposes pads that before); where the full conv is shorter, the bias alone."""
    before, size = max(k - s, 0) // 2, n * s
    out = np.broadcast_to(b[:, None, None], (len(b), size, size)).copy()
    kept = full[:, before:before + size, before:before + size]
    out[:, :kept.shape[1], :kept.shape[2]] = kept
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("k", KERNELS)
def test_transposed_conv_is_the_full_one_cropped_tf_way(k, n):
    torch.manual_seed(k * 10 + n)
    layer = SameConvTranspose2d(3, 4, k, 2).double()
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(1, 3, n, n, dtype=torch.double)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    expected = tf_crop(full_transposed(x[0].numpy(), w, b, 2), b, n, k, 2)
    np.testing.assert_allclose(layer(x)[0].detach().numpy(), expected, atol=1e-12)


def test_tf_keeps_the_first_rows_for_fs3_and_symmetric_the_last():
    # the difference the option exists for: at fs=3 the full output has 2n + 1 rows; TF keeps the first 2n
    torch.manual_seed(0)
    tf, symmetric = doubling_deconv(2, 2, 3, "tf"), doubling_deconv(2, 2, 3, "symmetric")
    symmetric.load_state_dict(tf.state_dict())
    x = torch.randn(1, 2, 4, 4)
    full = F.conv_transpose2d(x, tf.weight, tf.bias, 2)
    assert torch.allclose(tf(x), full[..., :8, :8]) and torch.allclose(symmetric(x), full[..., 1:, 1:])
    assert not torch.allclose(tf(x), symmetric(x))


def strided_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, s: int) -> torch.Tensor:
    """TF's strided 'same' conv from the full stride-1 conv (k - 1 zeros on every side): output i reads the
    window starting at i * s - before, which is full index i * s - before + k - 1."""
    n, k = x.shape[-1], w.shape[-1]
    before, _ = tf_pads(n, k, s)
    full = F.conv2d(x, w, b, padding=k - 1)
    index = torch.arange(-(-n // s)) * s - before + k - 1
    return full[..., index, :][..., index]


@pytest.mark.parametrize("n", [7, 8, 9, 16])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("k", KERNELS)
def test_strided_conv_is_the_full_one_sampled_tf_way(k, s, n):
    torch.manual_seed(k * 100 + s * 10 + n)
    layer = SameConv2d(3, 4, k, s).double()
    x = torch.randn(2, 3, n, n, dtype=torch.double)
    out = layer(x)
    assert out.shape[-2:] == (-(-n // s),) * 2
    torch.testing.assert_close(out, strided_reference(x, layer.weight, layer.bias, s))


@pytest.mark.parametrize("k, s, n, pads", [(3, 2, 64, (0, 1)), (5, 2, 64, (1, 2)), (3, 2, 7, (1, 1)),
                                           (5, 2, 7, (2, 2)), (3, 1, 8, (1, 1)), (4, 1, 8, (1, 2))])
def test_tf_pads(k, s, n, pads):
    # TF: ceil(n / s) outputs, the total padding's smaller half before (issue 21: k=3 pads 0 and 1, k=5 1 and 2)
    assert tf_pads(n, k, s) == pads


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_symmetric_conv_pads_both_sides_alike(k):
    layer = strided_conv(1, 1, k, 2, "symmetric")
    assert type(layer) is torch.nn.Conv2d and layer.padding == (k // 2, k // 2)


@pytest.mark.parametrize("fs", [2, 3, 4, 5])
@pytest.mark.parametrize("mul", [1, 2])
def test_padding_keeps_the_deconv_painters_parameters_and_shape(fs, mul):
    tf, symmetric = DeconvPainter(64, mul, fs, "tf"), DeconvPainter(64, mul, fs, "symmetric")
    assert count_params(tf) == count_params(symmetric)
    symmetric.load_state_dict(tf.state_dict())  # the same parameters, name by name
    coords = torch.rand(3, 2)
    out_tf, out_symmetric = tf.eval()(coords), symmetric.eval()(coords)
    assert out_tf.shape == out_symmetric.shape == (3, 64, 64)
    # fs=2 and fs=4 pad alike both ways; odd filters shift each layer's output
    assert torch.allclose(out_tf, out_symmetric) == (fs % 2 == 0)


def test_padding_keeps_the_quarter_regressors_parameters_and_changes_its_output():
    tf, symmetric = ConvRegressorQuarter(1, "tf"), ConvRegressorQuarter(1, "symmetric")
    assert count_params(tf) == count_params(symmetric) == 12914
    symmetric.load_state_dict(tf.state_dict())
    images = torch.rand(2, 1, 64, 64)
    assert tf.eval()(images).shape == symmetric.eval()(images).shape == (2, 2)
    # before the last ReLU (at initialisation it can zero both outputs): the strided layers read other pixels
    assert not torch.allclose(tf.net[:-1](images), symmetric.net[:-1](images))


def layer_calls(model, inputs, kind):
    """(layer, its input, its output) of every `kind` layer as `model` runs on `inputs` (double precision)."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0], o))) for m in model.modules()
             if isinstance(m, kind)]
    model.double().eval()(inputs)
    for hook in hooks:
        hook.remove()
    return calls


@pytest.mark.parametrize("fs", [2, 3, 4, 5])
def test_the_paper_presets_deconv_is_tf_cropped_layer_by_layer(fs):
    cfg = make_cfg("setting=classification_conv_paper", "split=uniform", f"model.fs={fs}")
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas).to(memory_format=torch.contiguous_format)
    calls = layer_calls(model, torch.rand(1, 2, dtype=torch.double) * 54 + 4, torch.nn.ConvTranspose2d)
    assert [tuple(x.shape[-2:]) for _, x, _ in calls] == [(n, n) for n in (1, 2, 4, 8, 16, 32)]
    for layer, x, out in calls:
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        expected = tf_crop(full_transposed(x[0].detach().numpy(), w, b, 2), b, x.shape[-1], fs, 2)
        np.testing.assert_allclose(out[0].detach().numpy(), expected, atol=1e-9)


def test_the_paper_presets_quarter_regressor_pads_tf_way_layer_by_layer():
    cfg = make_cfg("setting=regression_conv_paper", "split=quarter")
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas).to(memory_format=torch.contiguous_format)
    calls = layer_calls(model, torch.rand(1, 1, 64, 64, dtype=torch.double), torch.nn.Conv2d)
    strided = [(layer.kernel_size[0], x.shape[-1]) for layer, x, _ in calls if layer.stride == (2, 2)]
    assert strided == [(5, 64), (3, 32), (3, 16), (3, 8), (3, 4)]  # the authors' strided layers, k 5 and 3
    for layer, x, out in calls:
        torch.testing.assert_close(out, strided_reference(x, layer.weight, layer.bias, layer.stride[0]))
