"""The fast paths: structure-aware CoordConv layers compute what the plain layers compute."""
import pytest
import torch

from coordexp.models import build_model
from coordexp.tasks import build_task
from conftest import make_cfg

SMALL = ["data.canvas=16", "data.square=5"]  # 144 examples of 16x16: evaluations take milliseconds
# (task, model family, extra overrides): every model with a fast path
FAST_MODELS = [
    ("classification", "coordconv", []),                      # painter
    ("classification", "coordconv", ["model.with_r=true"]),
    ("rendering", "coordconv", []),                           # renderer (reuses the painter)
    ("regression", "coordconv", []),                          # regressor
    ("classification", "coordmlp", ["model.hidden=32"]),      # CoordMLP painter
    ("regression", "conv", []),                               # conv regressor: channels-last only
]


def fast_and_plain(task, family, extra):
    """The fast and the plain implementation of one model, with the same weights, and a batch of inputs."""
    cfg = make_cfg(f"task={task}", f"model={family}", *SMALL, *extra)
    torch.manual_seed(0)
    fast = build_model(cfg.model, task, cfg.data.canvas)
    plain = build_model(make_cfg(f"task={task}", f"model={family}", "model.fast=false", *extra).model, task,
                        cfg.data.canvas)
    plain.load_state_dict(fast.state_dict())
    centres = torch.tensor([[2, 2], [13, 13], [9, 5], [4, 11], [12, 3]])
    inputs, _ = build_task(cfg.task, cfg.data).build(centres)
    if task == "regression":
        inputs = inputs + 0.1 * torch.rand_like(inputs)  # not only one-hot: exercise every pixel
    return fast, plain, inputs


@pytest.mark.parametrize("task, family, extra", FAST_MODELS)
def test_fast_and_plain_give_the_same_outputs(task, family, extra):
    fast, plain, inputs = fast_and_plain(task, family, extra)
    out_fast = fast(inputs)
    assert out_fast.dtype == torch.float32
    torch.testing.assert_close(out_fast, plain(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task, family, extra", FAST_MODELS)
def test_fast_and_plain_give_the_same_gradients(task, family, extra):
    # in float64: in fp32 the two can round a pre-activation within ~1e-7 of 0 to opposite sides of a ReLU
    fast, plain, inputs = fast_and_plain(task, family, extra)
    fast, plain, inputs = fast.double(), plain.double(), inputs.double()
    out_fast, out_plain = fast(inputs), plain(inputs)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(out_plain)
    (out_fast * weights).sum().backward()
    (out_plain * weights).sum().backward()
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("task, family, extra", FAST_MODELS[:1] + FAST_MODELS[2:4])
def test_fast_and_plain_agree_under_bf16_autocast(task, family, extra):
    fast, plain, inputs = fast_and_plain(task, family, extra)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fast, out_plain = fast(inputs).float(), plain(inputs).float()
    torch.testing.assert_close(out_fast, out_plain, rtol=0.05, atol=0.05 * out_plain.abs().max().item())
