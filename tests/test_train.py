"""End-to-end runs: every task x split x model trains (shrunk to seconds) and writes every output."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from coordexp.run import train
from conftest import make_cfg

import torch

from coordexp.config import FAMILIES, SPLITS, TASKS
from coordexp.precision import resolve_precision
from coordexp.tasks import TASK_CLASSES

pytestmark = pytest.mark.steps
# The paper's counts for the default models (read off the authors' code); None: no count in the paper. The deconv
# painter's recipe is the fs=3, mul=1 point of the paper's grid (its 409,921-param fs=3, mul=2 size: test_models.py).
PAPER_PARAMS = {
    ("classification", "coordconv"): 7553,
    ("classification", "conv"): 103585,
    ("rendering", "conv"): 103585,
    ("regression", "coordconv"): 906,
    ("regression", "conv", "uniform"): 72850,
    ("regression", "conv", "quarter"): 12914,
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("task", TASKS)
def test_every_combination_runs_and_writes_its_outputs(tmp_path, smoke, task, split, family):
    cfg = make_cfg(f"task={task}", f"split={split}", f"model={family}", *smoke)
    metrics = train(cfg, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert written["status"] == "completed"
    assert (written["task"], written["split"], written["model"]) == (task, split, family)
    assert written["precision"] == resolve_precision(cfg.trainer.precision, torch.device("cpu"))
    for key in ("params", "epochs", "wall_seconds", "train", "test"):
        assert key in written
    # where the session's time went: every phase measured, none negative, together within the session's total
    seconds = written["session_seconds"]
    phases = ("setup", "train", "evaluate_log_checkpoint", "plots")
    assert set(seconds) == {*phases, "total"} and min(seconds.values()) >= 0
    assert sum(seconds[p] for p in phases) <= seconds["total"] + 0.01
    assert seconds["train"] == pytest.approx(written["train_seconds"], abs=0.01)
    headline = TASK_CLASSES[task].headline
    assert headline in written["train"] and headline in written["test"]
    expected = PAPER_PARAMS.get((task, family), PAPER_PARAMS.get((task, family, split)))
    if expected is not None:
        assert written["params"] == expected
    assert list(tmp_path.glob("events.out.tfevents.*"))
    plots = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert "success_map.png" in plots
    assert ("positions.png" if task == "regression" else "examples.png") in plots


def test_cli_run_writes_hydra_config_tensorboard_plots_and_metrics(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "coordexp.train", "task=regression", "split=quarter", "model=coordconv",
         "debug=fast", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / ".hydra" / "overrides.yaml").exists()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert not [p for p in run_dir.iterdir() if p.is_dir() and p.name not in (".hydra", "plots")]  # no stray sub-run
    assert {p.name for p in (run_dir / "plots").iterdir()} == {"success_map.png", "positions.png", "parameters.png",
                                                          "input_channels.png", "maps_before_pooling.png"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["params"] == 906
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert {"train/loss", "test/loss", "train/pixel_error", "test/pixel_error"} <= set(events.Tags()["scalars"])
    assert {"plots/success_map", "plots/positions"} <= set(events.Tags()["images"])
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)


def test_a_run_without_plots_never_loads_matplotlib_or_the_event_reader(tmp_path):
    # what a run may not use loads only when it is used: a run with trainer.plots=false skips ~0.5 s of imports
    code = ("import sys; from pathlib import Path; from coordexp.run import train; from conftest import make_cfg; "
            f"train(make_cfg('task=classification', 'trainer.plots=false', 'debug=fast'), Path({str(tmp_path)!r})); "
            "loaded = [m for m in ('matplotlib', 'tensorboard.backend.event_processing.event_accumulator', "
            "'coordexp.aggregate') if m in sys.modules]; print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"
