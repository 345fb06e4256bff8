"""The sampled data mode (data=sampled), its valid set, and the regression task's targets and losses."""
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from coordexp import run as run_module
from coordexp.aggregate import summary_markdown
from coordexp.results import read_job
from coordexp.config import Exhaustive, Sampled
from coordexp.data import data_centres, heatmap_images, onehot_images, quarter_test_mask, sampled_centres
from coordexp.reproduce import Group, best
from coordexp.tasks import build_task
from coordexp.run import train
from conftest import make_cfg

SMALL = ["data=sampled", "data.canvas=16", "data.square=5", "data.train_size=64", "data.valid_size=32",
         "data.test_size=48"]


def test_the_exhaustive_default_composes_key_by_key_as_before():
    cfg = make_cfg()
    assert OmegaConf.get_type(cfg.data) is Exhaustive
    assert OmegaConf.to_container(cfg.data) == {
        "name": "exhaustive", "canvas": 64, "square": 9, "square_value": 1.0, "uniform_split": "fraction",
        "test_fraction": 0.2, "split_seed": 0}
    assert make_cfg("data.canvas=32").data.canvas == 32  # overrides keep their names
    centres, parts = data_centres("quarter", cfg.data)
    assert list(parts) == ["train", "test"] and (len(parts["train"]), len(parts["test"])) == (2407, 729)


def test_sampled_set_sizes_and_the_keys_of_the_mode():
    cfg = make_cfg("data=sampled")
    assert OmegaConf.get_type(cfg.data) is Sampled
    centres, parts = sampled_centres("quarter", cfg.data)
    assert {p: len(i) for p, i in parts.items()} == {"train": 2000, "valid": 500, "test": 1000}
    assert len(centres) == 3500 and torch.equal(torch.cat(list(parts.values())), torch.arange(3500))
    small = make_cfg(*SMALL, "split=uniform")
    assert {p: len(i) for p, i in sampled_centres("uniform", small.data)[1].items()} == {
        "train": 64, "valid": 32, "test": 48}


def test_each_set_is_drawn_from_its_own_seed():
    cfg = make_cfg("data=sampled")
    a, parts = sampled_centres("quarter", cfg.data)
    again, _ = sampled_centres("quarter", cfg.data)
    assert torch.equal(a, again)  # the same seeds give the same sets
    b, _ = sampled_centres("quarter", make_cfg("data=sampled", "data.train_seed=5").data)
    assert not torch.equal(a[parts["train"]], b[parts["train"]])  # a new train seed changes train only
    assert torch.equal(a[parts["valid"]], b[parts["valid"]]) and torch.equal(a[parts["test"]], b[parts["test"]])
    c, _ = sampled_centres("quarter", make_cfg("data=sampled", "data.test_seed=7").data)
    assert not torch.equal(a[parts["test"]], c[parts["test"]]) and torch.equal(a[parts["train"]], c[parts["train"]])
    # valid and test differ though both come from the held-out quarter (their seeds differ)
    assert not torch.equal(a[parts["valid"]], a[parts["test"]][:500])


def test_sampled_quarter_split_holds_the_quarter_out_of_training():
    cfg = make_cfg("data=sampled")
    centres, parts = sampled_centres("quarter", cfg.data)
    in_quarter = quarter_test_mask(centres, 64)
    assert not in_quarter[parts["train"]].any()  # no train position in the held-out quarter
    assert in_quarter[parts["valid"]].all() and in_quarter[parts["test"]].all()
    assert centres.min() >= 4 and centres.max() <= 59  # where the 9x9 square fits
    # the uniform split draws every set from the whole canvas: train lands in the quarter too
    centres, parts = sampled_centres("uniform", cfg.data)
    assert quarter_test_mask(centres, 64)[parts["train"]].any() and not quarter_test_mask(centres, 64).all()


def test_blurred_heatmaps_peak_at_one_on_their_centre():
    centres = torch.tensor([[3, 5], [0, 0], [15, 9]])
    images = heatmap_images(centres, 16, sigma=2.0)
    assert images.shape == (3, 1, 16, 16)
    assert torch.equal(images.flatten(1).max(dim=1).values, torch.ones(3))
    assert torch.equal(images.flatten(1).argmax(dim=1), centres[:, 1] * 16 + centres[:, 0])
    assert images[0, 0, 5, 4].item() == pytest.approx(math.exp(-1 / 8))  # one pixel away: exp(-d^2 / 2 sigma^2)
    cfg = make_cfg(*SMALL, "data.blur_sigma=2", "task.onehot_scale=1")
    inputs, _ = build_task(cfg.task, cfg.data).build(centres)
    assert torch.equal(inputs, images)
    plain = make_cfg(*SMALL, "task.onehot_scale=1")  # blur_sigma=0: the one-hot, as the exhaustive mode
    assert torch.equal(build_task(plain.task, plain.data).build(centres)[0], onehot_images(centres, 16))


def test_regression_targets_in_pixels_or_normalized():
    centres = torch.tensor([[4, 59], [33, 10]])
    normalized = build_task(make_cfg().task, make_cfg().data)
    pixels_cfg = make_cfg("task.target=pixels")
    pixels = build_task(pixels_cfg.task, pixels_cfg.data)
    assert torch.equal(normalized.build(centres)[1], centres.float() / 64)
    assert torch.equal(pixels.build(centres)[1], centres.float())
    # the same prediction, 1 px off in x, scores the same pixel error whatever the target's units
    assert normalized.per_example(torch.tensor([[5 / 64, 59 / 64]]), centres[:1].float() / 64)[
        "pixel_error"].item() == pytest.approx(1.0)
    raw_cfg = make_cfg("task.target=pixels", "task.output=raw")
    raw = build_task(raw_cfg.task, raw_cfg.data)
    assert raw.per_example(torch.tensor([[5.0, 59.0]]), centres[:1].float())["pixel_error"].item() == 1.0
    # output=canvas: the model's output is a fraction of the canvas (the MLPs' sigmoid x canvas, as the source)
    assert pixels.per_example(torch.tensor([[5 / 64, 59 / 64]]), centres[:1].float())[
        "pixel_error"].item() == pytest.approx(1.0)


def test_l1_and_mse_losses_in_the_targets_units():
    outputs, targets = torch.tensor([[0.5, 0.25]]), torch.tensor([[0.0, 0.0]])

    def loss(*overrides):
        cfg = make_cfg(*overrides)
        return build_task(cfg.task, cfg.data).loss(outputs, targets).item()
    assert loss() == pytest.approx((0.25 + 0.0625) / 2)  # mse on (x, y) / canvas, the paper
    assert loss("task.loss=l1") == pytest.approx((0.5 + 0.25) / 2)
    assert loss("task.target=pixels", "task.loss=l1") == pytest.approx((32 + 16) / 2)  # output x canvas
    assert loss("task.target=pixels", "task.loss=l1", "task.output=raw") == pytest.approx((0.5 + 0.25) / 2)
    assert loss("task.target=pixels") == pytest.approx((32**2 + 16**2) / 2)


def test_a_run_reports_valid_beside_test(tmp_path):
    cfg = make_cfg(*SMALL, "debug=fast", "trainer.plots=true")
    metrics = train(cfg, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "completed" and set(written["valid"]) == set(written["test"]) == {
        "loss", "pixel_error", "accuracy"}
    assert "valid" in written["history"]["metrics"][-1] and metrics["valid"] == written["valid"]
    row = read_job(tmp_path, tmp_path.parent)
    assert row["valid_pixel_error"] == written["valid"]["pixel_error"]
    table = summary_markdown([{**row, "status": "completed"}], "sweep")
    assert "| train | valid | test |" in table
    assert "| train | test |" in summary_markdown([{k: v for k, v in row.items() if not k.startswith("valid")}], "s")


def test_target_stopping_uses_valid_not_test(tmp_path, monkeypatch):
    """Test targets pushed far out of reach: a run that stopped on test would train every epoch."""
    build = run_module.build_dataset

    def unreachable_test(cfg, task, device):
        data = build(cfg, task, device)
        data.targets[data.test_idx] += 1000.0
        return data
    monkeypatch.setattr(run_module, "build_dataset", unreachable_test)
    cfg = make_cfg(*SMALL, "debug=fast", "trainer.epochs=3", "trainer.target=100", "trainer.plots=false")
    metrics = train(cfg, tmp_path)
    assert metrics["epochs"] == 1  # valid error < 100 px after the first epoch: stopped there
    assert metrics["valid"]["pixel_error"] < 100 < metrics["test"]["pixel_error"]


def test_best_of_a_sweep_is_chosen_on_valid_where_there_is_one():
    def point(lr, train, valid=None, test=0.0):
        run = {"status": "completed", "train_pixel_error": train, "test_pixel_error": test}
        return Group("regression", "quarter", "conv", lr, runs=[run | ({} if valid is None else
                                                                       {"valid_pixel_error": valid})])
    # fits train best, but worse on valid (and best on test, which must never choose)
    points = [point("lr1", train=0.1, valid=5.0, test=0.0), point("lr2", train=0.3, valid=1.0, test=9.0)]
    assert best(points).variant == "lr2"
    assert best([point("lr1", 0.1, test=9.0), point("lr2", 0.3, test=0.0)]).variant == "lr1"  # no valid: train


def test_a_sampled_run_interrupted_resumes_to_the_identical_result(tmp_path):
    from coordexp.rundir import Interrupted, StopRequest

    class StopAfter(StopRequest):  # acts as if SIGTERM arrived after `steps` optimizer steps
        def __init__(self, steps: int):
            super().__init__()
            self.steps = steps

        def poll(self) -> int:
            self.steps -= 1
            return 15 if self.steps == 0 else 0
    small = [*SMALL, "trainer.epochs=2", "trainer.max_steps_per_epoch=2", "trainer.plots=false",
             "trainer.progress=false"]
    whole = train(make_cfg(*small), tmp_path / "whole")
    with pytest.raises(Interrupted):
        train(make_cfg(*small), tmp_path / "cut", stop=StopAfter(3))
    resumed = train(make_cfg(*small), tmp_path / "cut", resume=True)
    assert {k: resumed[k] for k in ("epochs", "step", "train", "valid", "test")} == {
        k: whole[k] for k in ("epochs", "step", "train", "valid", "test")}
