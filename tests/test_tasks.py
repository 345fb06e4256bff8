import subprocess
import sys

import pytest
import torch

from coordexp.run import build_dataset, probe_data
from coordexp.tasks import DegenerateData, build_task
from conftest import make_cfg


def task(name, *overrides):
    cfg = make_cfg(f"task={name}", *overrides)
    return build_task(cfg.task, cfg.data)


def test_classification_metrics_on_hand_made_logits():
    t = task("classification")
    centres = torch.tensor([[10, 20], [30, 40]])
    inputs, targets = t.build(centres)
    assert targets.tolist() == [20 * 64 + 10, 40 * 64 + 30]
    assert inputs.min() >= -1 and inputs.max() <= 1
    logits = torch.zeros(2, 64, 64)
    logits[0, 20, 10] = 5.0   # right
    logits[1, 44, 33] = 5.0   # 3 px right, 4 px down: 5 px away
    per = t.per_example(logits, targets)
    assert per["accuracy"].tolist() == [1.0, 0.0]
    assert per["pixel_error"].tolist() == pytest.approx([0.0, 5.0])


def test_classification_pixel_inputs_are_raw():
    t = task("classification", "task.input_coords=pixels")
    inputs, _ = t.build(torch.tensor([[10, 20]]))
    assert inputs.tolist() == [[10.0, 20.0]]


def test_regression_metrics_on_hand_made_predictions():
    t = task("regression", "task.onehot_scale=1")
    centres = torch.tensor([[10, 20], [30, 40], [50, 50]])
    inputs, targets = t.build(centres)
    assert inputs.shape == (3, 1, 64, 64) and inputs.sum() == 3
    pred = targets.clone()
    pred[1] += torch.tensor([3.0, 4.0]) / 64     # 5 px off
    pred[2] += torch.tensor([0.4, -0.3]) / 64    # rounds to the target
    per = t.per_example(pred, targets)
    assert per["pixel_error"].tolist() == pytest.approx([0.0, 5.0, 0.5], abs=1e-4)
    assert per["accuracy"].tolist() == [1.0, 0.0, 1.0]
    assert t.loss(targets, targets).item() == 0


def test_regression_onehot_scale():
    inputs, _ = task("regression", "task.onehot_scale=8").build(torch.tensor([[10, 20]]))
    assert inputs.max().item() == 8.0


def test_rendering_iou_on_hand_made_masks():
    t = task("rendering")
    centres = torch.tensor([[20, 20], [20, 20], [20, 20]])
    _, targets = t.build(centres)
    logits = torch.full((3, 64, 64), -10.0)
    logits[0][targets[0] > 0] = 10.0                       # perfect
    logits[1, 16:25, 17:26] = 10.0                          # shifted one pixel right: 72 / 90
    per = t.per_example(logits, targets)                    # [2] paints nothing: 0
    assert per["iou"].tolist() == pytest.approx([1.0, 72 / 90, 0.0])


@pytest.mark.parametrize("loss", ["bce", "mse_sigmoid"])
def test_rendering_losses_are_lower_for_better_predictions(loss):
    t = task("rendering", f"task.loss={loss}")
    _, targets = t.build(torch.tensor([[20, 20]]))
    good = (targets * 2 - 1) * 10
    assert t.loss(good, targets) < t.loss(torch.zeros_like(targets), targets) < t.loss(-good, targets)


def test_rendering_mse_is_on_the_logits_as_the_authors_and_mse_sigmoid_on_the_probabilities():
    _, targets = task("rendering").build(torch.tensor([[20, 20]]))
    logits = (targets * 2 - 1) * 10  # sigmoid ~ the target, logits far from it
    assert task("rendering", "task.loss=mse").loss(targets, targets).item() == 0
    assert task("rendering", "task.loss=mse").loss(logits, targets).item() == pytest.approx(
        ((logits - targets) ** 2).mean().item())
    assert task("rendering", "task.loss=mse_sigmoid").loss(logits, targets).item() < 1e-8


def test_gray_squares_scored_as_the_authors_cap_iou_at_their_value():
    gray = 128 / 255
    weighted = task("rendering", "data.square_value=0.50196")
    binary = task("rendering", "data.square_value=0.50196", "task.iou=binary")
    _, targets = weighted.build(torch.tensor([[20, 20]]))
    perfect = torch.where(targets > 0, 10.0, -10.0)
    assert weighted.per_example(perfect, targets)["iou"].item() == pytest.approx(gray, abs=1e-4)
    assert binary.per_example(perfect, targets)["iou"].item() == 1.0
    ones = task("rendering")  # binary squares: the two scores agree
    _, square = ones.build(torch.tensor([[20, 20]]))
    shifted = torch.full((1, 64, 64), -10.0)
    shifted[0, 16:25, 17:26] = 10.0
    assert ones.per_example(shifted, square)["iou"].item() == pytest.approx(72 / 90)
    assert task("rendering", "task.iou=binary").per_example(shifted, square)["iou"].item() == pytest.approx(72 / 90)


@pytest.mark.parametrize("name", ["classification", "regression", "rendering"])
def test_every_task_reports_only_registered_metrics_and_its_headline(name):
    from coordexp.tasks import METRICS
    t = task(name)
    inputs, targets = t.build(torch.tensor([[10, 20], [40, 50]]))
    outputs = torch.zeros(2, 2) if name == "regression" else torch.zeros(2, 64, 64)
    per = t.per_example(outputs, targets)
    assert set(per) <= set(METRICS) and t.headline in per


# settings whose data carries no position: (overrides, the part, what is wrong with it, the keys named)
DEGENERATE = [
    (["task=regression", "data=sampled", "data.blur_sigma=1e-30"], "inputs", "not finite", "data.blur_sigma=1e-30"),
    (["task=regression", "data=sampled", "data.blur_sigma=1e6"], "inputs", "the same for every position",
     "data.blur_sigma=1000000.0"),
    (["task=regression", "task.onehot_scale=1e-60"], "inputs", "all zero", "task.onehot_scale=1e-60"),
    (["task=regression", "task.onehot_scale=1e39"], "inputs", "not finite", "task.onehot_scale=1e+39"),
    (["task=rendering", "data.square_value=1e-50"], "targets", "all zero", "data.square_value=1e-50"),
    (["task=rendering", "data=sampled", "data.square_value=1e-46"], "targets", "all zero", "data.square_value=1e-46"),
]


@pytest.mark.parametrize("overrides, part, problem, named", DEGENERATE, ids=[" ".join(c[0][1:]) for c in DEGENERATE])
def test_degenerate_data_is_its_own_error_naming_the_keys_it_is_built_from(overrides, part, problem, named):
    cfg = make_cfg(*overrides, "debug=fast")
    with pytest.raises(DegenerateData) as raised:
        build_dataset(cfg, build_task(cfg.task, cfg.data), torch.device("cpu"))
    message = str(raised.value)
    assert f"the {cfg.task.name} {part} built with" in message and problem in message and named in message
    assert "\n" not in message and "lr" not in message
    with pytest.raises(DegenerateData, match=problem):  # found before any work, from a few of its positions
        probe_data(cfg)


@pytest.mark.parametrize("overrides", [["task=regression", "data=sampled", "data.blur_sigma=1e-20"],
                                       ["task=regression", "data=sampled", "data.blur_sigma=1e4"],
                                       ["task=rendering", "data.square_value=1e-30"], ["task=classification"]])
def test_data_that_still_tells_positions_apart_is_built(overrides):
    cfg = make_cfg(*overrides, "debug=fast")
    build_dataset(cfg, build_task(cfg.task, cfg.data), torch.device("cpu"))


@pytest.mark.parametrize("sweep", [False, True])
def test_a_run_or_sweep_on_degenerate_data_is_refused_in_one_line_before_any_work(tmp_path, sweep):
    out = tmp_path / "out"
    blur = "data.blur_sigma=1,1e-30" if sweep else "data.blur_sigma=1e-30"
    result = subprocess.run([sys.executable, "-m", "coordexp.train", *(["-m"] if sweep else []), "task=regression",
                             "data=sampled", blur, "debug=fast", "trainer.plots=false", f"hydra.run.dir={out}",
                             f"hydra.sweep.dir={out}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("coordexp: error: degenerate data: the regression inputs built with "
                                    "data.blur_sigma=1e-30"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "diverged" not in result.stderr
    assert not out.exists()  # nothing written: the whole sweep is refused, its good job too
