"""The fast paths: structure-aware CoordConv layers compute what the plain layers compute, bf16 training
leaves evaluation in fp32, and trainer.target stops a run at the result."""
import pytest
import torch

from coordexp.config import ConfigError, check
from coordexp.loop import evaluate, reached, train_step, training_over
from coordexp.models import build_model
from coordexp.rundir import History, TrainState
from coordexp.tasks import build_task
from coordexp.run import build_run, train
from conftest import make_cfg

pytestmark = pytest.mark.steps
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


def test_fast_painter_never_builds_the_tiled_input():
    fast, plain, inputs = fast_and_plain("classification", "coordconv", [])
    calls = []
    for model in (fast, plain):
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, type(model.add_coords))):
                module.register_forward_hook(lambda module, args, out: calls.append(type(module).__name__))
    fast(inputs)
    assert calls == []
    plain(inputs)
    assert calls == ["AddCoords"] + ["Conv2d"] * 5


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


def test_bf16_training_step_and_fp32_evaluation():
    cfg = make_cfg("task=classification", "model=coordconv", "trainer.precision=bf16", *SMALL)
    task, data, model, optimizer = build_run(cfg, torch.device("cpu"))
    dtypes = []
    model.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    idx = data.train_idx[:8]
    before = [p.detach().clone() for p in model.parameters()]
    loss = train_step(model, task, optimizer, data.inputs[idx], data.targets[idx], "bf16")
    assert dtypes == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    evaluation = evaluate(model, task, data, cfg.trainer.eval_batch_size)
    assert set(dtypes[1:]) == {torch.float32} and evaluation.outputs.dtype == torch.float32


def test_bf16_run_trains_end_to_end(tmp_path, smoke):
    metrics = train(make_cfg("task=rendering", "model=coordconv", "trainer.precision=bf16", *SMALL, *smoke), tmp_path)
    assert metrics["status"] == "completed" and 0 <= metrics["test"]["iou"] <= 1
    assert metrics["train_seconds"] <= metrics["wall_seconds"]


def test_target_stops_at_the_first_evaluation_that_reaches_it(tmp_path):
    budget = ["task=classification", "model=coordconv", "trainer.epochs=3", "trainer.max_steps_per_epoch=2",
              "trainer.eval_every=1", "trainer.plots=false", "trainer.progress=false", *SMALL]
    assert train(make_cfg(*budget, "trainer.target=0.0"), tmp_path / "stop")["epochs"] == 1
    assert train(make_cfg(*budget), tmp_path / "full")["epochs"] == 3


@pytest.mark.parametrize("data, part", [([], "test"), (["data=sampled"], "valid")])
def test_target_part_train_stops_on_the_training_set_never_on_held_out(data, part):
    # a baseline that fits its training set (train 0.97) and fails its held-out part (0.02)
    metrics = {"train": {"accuracy": 0.97}, part: {"accuracy": 0.02}}
    state = TrainState(epoch=5, history=History(epochs=[5], metrics=[metrics]))
    cfg = make_cfg("task=classification", "trainer.epochs=10", "trainer.target=0.95", *data)
    task = build_task(cfg.task, cfg.data)
    assert not training_over(task, state, cfg)  # held_out (the default): the test/valid part decides
    cfg.trainer.target_part = "train"
    assert training_over(task, state, cfg)
    metrics["train"]["accuracy"] = 0.9
    assert not training_over(task, state, cfg)


def test_target_part_train_ends_a_run_once_it_fits(tmp_path):
    budget = ["task=classification", "model=coordconv", "trainer.epochs=3", "trainer.max_steps_per_epoch=2",
              "trainer.eval_every=1", "trainer.plots=false", "trainer.progress=false", *SMALL]
    full = train(make_cfg(*budget), tmp_path / "full")
    fitted = [m["train"]["accuracy"] for m in full["history"]["metrics"]]
    target = max(fitted)  # reached on train at its first epoch with that value, whatever test does
    stopped = train(make_cfg(*budget, f"trainer.target={target}", "trainer.target_part=train"), tmp_path / "stop")
    assert stopped["epochs"] == full["history"]["epochs"][fitted.index(target)]


def test_target_direction_follows_the_metric():
    cfg = make_cfg("task=regression")
    regression = build_task(cfg.task, cfg.data)
    assert reached(regression, {"pixel_error": 0.4}, 0.5) and not reached(regression, {"pixel_error": 0.5}, 0.5)
    classification = build_task(make_cfg("task=classification").task, cfg.data)
    assert reached(classification, {"accuracy": 1.0}, 1.0) and not reached(classification, {"accuracy": 0.99}, 1.0)
    assert not reached(classification, {"accuracy": 1.0}, None)


@pytest.mark.parametrize("override, expected", [
    ("trainer.precision=fp16", "trainer.precision='fp16' is invalid: valid choices: auto, bf16, fp32"),
    ("trainer.target=-1", "trainer.target=-1 is invalid"),
    ("trainer.target_part=test", "trainer.target_part='test' is invalid: valid choices: held_out, train"),
    ("model.fast=maybe", "model.fast='maybe' is invalid: must be true or false"),
])
def test_bad_fast_path_settings_are_config_errors(override, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check(make_cfg(override))
