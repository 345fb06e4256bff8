"""Runs that lose nothing: checkpoints, interruption and resume, determinism, divergence."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from coordexp.checkpoint import CHECKPOINT, load_checkpoint
from coordexp.interrupt import Interrupted, StopRequest
from coordexp.loop import Diverged
from coordexp.train import train
from conftest import make_cfg

# A small but real run: a 32x32 canvas keeps each evaluation cheap; 3 epochs of 4 steps.
SMALL = ["task=regression", "model=coordconv", "data.canvas=32", "data.square=5", "trainer.epochs=3",
         "trainer.max_steps_per_epoch=4", "trainer.plots=false", "trainer.progress=false"]


class StopAfter(StopRequest):
    """Acts as if SIGTERM arrived after `steps` optimizer steps."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def poll(self) -> int:
        self.steps -= 1
        return signal.SIGTERM if self.steps == 0 else 0


def final(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("epochs", "step", "train", "test", "status")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    metrics = train(make_cfg(*SMALL), run_dir)
    return final(metrics), load_checkpoint(run_dir / CHECKPOINT)["model"]


@pytest.mark.parametrize("kill_after", [1, 4, 6, 12])  # mid-epoch, epoch end, mid-epoch 2, after the last step
def test_a_run_killed_at_any_step_resumes_to_the_identical_result(tmp_path, uninterrupted, kill_after):
    with pytest.raises(Interrupted):
        train(make_cfg(*SMALL), tmp_path, stop=StopAfter(kill_after))
    stopped = json.loads((tmp_path / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["step"] == kill_after
    assert load_checkpoint(tmp_path / CHECKPOINT)["state"]["step"] == kill_after
    resumed = train(make_cfg(*SMALL), tmp_path, resume=True)
    expected_metrics, expected_weights = uninterrupted
    assert final(resumed) == expected_metrics
    weights = load_checkpoint(tmp_path / CHECKPOINT)["model"]
    assert all(torch.equal(weights[k], expected_weights[k]) for k in expected_weights)


def test_same_seed_gives_identical_metrics_and_other_seeds_differ(tmp_path):
    a = train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path / "a")
    b = train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path / "b")
    c = train(make_cfg(*SMALL, "trainer.epochs=1", "seed=1"), tmp_path / "c")
    assert final(a) == final(b)
    assert final(a)["test"] != final(c)["test"]


def test_a_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from coordexp.tasks import Regression
    loss, steps = Regression.loss, []

    def poisoned(self, outputs, targets):  # training steps (outputs with grad) from the 6th on give NaN
        value = loss(self, outputs, targets)
        if outputs.requires_grad:
            steps.append(1)
            if len(steps) >= 6:
                return value * float("nan")
        return value

    monkeypatch.setattr(Regression, "loss", poisoned)
    with pytest.raises(Diverged) as error:
        train(make_cfg(*SMALL), tmp_path)
    assert (error.value.epoch, error.value.step) == (2, 6)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "epoch 2, step 6" in metrics["error"]
    assert load_checkpoint(tmp_path / CHECKPOINT)["state"]["epoch"] == 1  # the last good one


def test_a_huge_learning_rate_diverges_with_a_readable_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "coordexp.train", *SMALL, "optimizer=sgd", "optimizer.lr=1e30",
                             f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "non-finite" in result.stderr and "epoch 1, step" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path)
    before = load_checkpoint(tmp_path / CHECKPOINT)
    # a child process that dies (as under SIGKILL) half-way through writing the next checkpoint
    script = f"""
import os, torch
from coordexp import checkpoint, files
real = files.atomic_write
def dying_write(path, write):
    def half(f):
        f.write(b"x" * 1000); f.flush(); os._exit(137)
    real(path, half)
checkpoint.atomic_write = dying_write
from coordexp.checkpoint import TrainState, save_checkpoint
model = torch.nn.Linear(1, 1)
save_checkpoint(__import__("pathlib").Path({str(tmp_path / CHECKPOINT)!r}), {{}}, model,
                torch.optim.SGD(model.parameters(), 0.1), TrainState(), torch.Generator())
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 137
    after = load_checkpoint(tmp_path / CHECKPOINT)
    assert after["state"] == before["state"]
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "coordexp.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_and_the_cli_resumes_to_the_same_result(tmp_path, sig, code):
    args = [*SMALL, "trainer.epochs=4", "trainer.max_steps_per_epoch=40"]
    reference = cli(*args, f"hydra.run.dir={tmp_path / 'reference'}")
    run = cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    deadline = time.time() + 120
    while not (tmp_path / "run" / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    run.send_signal(sig)
    _, err = run.communicate(timeout=120)
    assert run.returncode == code, err
    assert "resume=" in err and "Traceback" not in err
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and 1 <= stopped["epochs"] < 4
    resumed = cli(f"resume={tmp_path / 'run'}")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    reference.communicate(timeout=300)
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert final(json.loads((tmp_path / "run" / "metrics.json").read_text())) == final(expected)


def test_resume_refuses_overrides_that_change_the_experiment(tmp_path):
    train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path)
    result = subprocess.run([sys.executable, "-m", "coordexp.train", f"resume={tmp_path}", "optimizer.lr=0.5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "optimizer.lr=0.5" in result.stderr and "trainer.epochs" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1  # untouched


def test_resume_extends_a_finished_run(tmp_path):
    train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path)
    result = subprocess.run([sys.executable, "-m", "coordexp.train", f"resume={tmp_path}", "trainer.epochs=2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["step"] == 8
