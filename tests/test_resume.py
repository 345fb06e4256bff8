"""Runs that lose nothing: checkpoints, interruption and resume, determinism, divergence, and every ending
recorded (a kill at any moment after the last checkpoint leaves a run that resume= completes)."""
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from coordexp.loop import Diverged
from coordexp.rundir import CHECKPOINT, Interrupted, StopRequest, load_checkpoint, write_json
from coordexp.run import train
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


def strict_json(path):
    """The file's JSON; fails on NaN or Infinity, which JSON does not have."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not valid JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def assert_finite_checkpoint(path):
    checkpoint = load_checkpoint(path)
    tensors = [*checkpoint["model"].values()]
    tensors += [v for s in checkpoint["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert all(torch.isfinite(t.float()).all() for t in tensors if t.is_floating_point())
    return checkpoint


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
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["status"] == "diverged" and "epoch 2, step 6" in metrics["error"]
    assert "the last good checkpoint (epoch 1, step 4) is kept" in metrics["error"]
    assert load_checkpoint(tmp_path / CHECKPOINT)["state"]["epoch"] == 1  # the last good one


@pytest.mark.parametrize("bad_step, stop", [(8, None), (6, StopAfter(6))], ids=["at the epoch's end", "at a signal"])
def test_a_finite_loss_with_nonfinite_weights_is_divergence_and_never_checkpointed(tmp_path, monkeypatch, bad_step,
                                                                                    stop):
    import coordexp.loop
    step, calls = coordexp.loop.train_step, []

    def poisoned(model, *args):  # this step's update leaves a NaN weight; its loss is finite
        loss = step(model, *args)
        calls.append(1)
        if len(calls) == bad_step:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")
        return loss

    monkeypatch.setattr(coordexp.loop, "train_step", poisoned)
    with pytest.raises(Diverged, match=f"weights or optimizer state became non-finite by epoch 2, step {bad_step}"):
        train(make_cfg(*SMALL), tmp_path, stop=stop)
    assert assert_finite_checkpoint(tmp_path / CHECKPOINT)["state"]["step"] == 4  # epoch 1's, not the NaN one
    assert strict_json(tmp_path / "metrics.json")["status"] == "diverged"


@pytest.mark.parametrize("args, cause", [
    (["debug=fast", "trainer.max_steps_per_epoch=1", "optimizer.lr=1e300"], "weights or optimizer state"),
    ([*SMALL, "optimizer=sgd", "optimizer.lr=1e30"], "training loss"),
], ids=["finite loss, NaN update (the issue's command)", "NaN loss"])
def test_a_huge_learning_rate_diverges_with_a_true_message_and_valid_json(tmp_path, args, cause):
    result = subprocess.run([sys.executable, "-m", "coordexp.train", *args, f"hydra.run.dir={tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and f"{cause} became non-finite" in result.stderr
    assert "epoch 1, step" in result.stderr and "no checkpoint was written" in result.stderr  # none was
    assert strict_json(tmp_path / "metrics.json")["status"] == "diverged"
    assert not (tmp_path / CHECKPOINT).exists()


def test_metrics_json_writes_nonfinite_numbers_as_null_with_what_they_were(tmp_path):
    written = write_json(tmp_path / "m.json", {"status": "x", "test": {"loss": float("nan"), "iou": 0.5},
                                               "curve": [1.0, float("-inf")]})
    assert strict_json(tmp_path / "m.json") == written
    assert written["test"] == {"loss": None, "iou": 0.5} and written["curve"] == [1.0, None]
    assert written["nonfinite"] == {"test.loss": "nan", "curve[1]": "-inf"}


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    train(make_cfg(*SMALL, "trainer.epochs=1"), tmp_path)
    before = load_checkpoint(tmp_path / CHECKPOINT)
    # a child process that dies (as under SIGKILL) half-way through writing the next checkpoint
    script = f"""
import os, torch
from coordexp import rundir
real = rundir.atomic_write
def dying_write(path, write):
    def half(f):
        f.write(b"x" * 1000); f.flush(); os._exit(137)
    real(path, half)
rundir.atomic_write = dying_write
model = torch.nn.Linear(1, 1)
rundir.save_checkpoint(__import__("pathlib").Path({str(tmp_path / CHECKPOINT)!r}), {{}}, model,
                       torch.optim.SGD(model.parameters(), 0.1), rundir.TrainState(), torch.Generator())
"""
    assert subprocess.run([sys.executable, "-c", script]).returncode == 137
    after = load_checkpoint(tmp_path / CHECKPOINT)
    assert after["state"] == before["state"]
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
    leftovers = list(tmp_path.glob(f".{CHECKPOINT}.*.tmp"))
    assert len(leftovers) == 1  # what the killed write left
    result = subprocess.run([sys.executable, "-m", "coordexp.train", f"resume={tmp_path}", "trainer.epochs=2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob(".*.tmp"))  # the resumed run removed it


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "coordexp.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def same_weights(a, b) -> bool:
    wa, wb = load_checkpoint(a / CHECKPOINT)["model"], load_checkpoint(b / CHECKPOINT)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("sig, code, again", [
    (signal.SIGTERM, 143, "the same command"),  # what a requeued cluster job does: no resume= needed
    (signal.SIGINT, 130, "resume="),
])
def test_a_signal_checkpoints_and_the_cli_continues_to_the_same_result(tmp_path, sig, code, again):
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
    resumed = cli(*(args + [f"hydra.run.dir={tmp_path / 'run'}"] if again == "the same command"
                    else [f"resume={tmp_path / 'run'}"]))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming after epoch {stopped['epochs']}" in out + err
    reference.communicate(timeout=300)
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert final(json.loads((tmp_path / "run" / "metrics.json").read_text())) == final(expected)
    assert same_weights(tmp_path / "run", tmp_path / "reference")


# --- every ending recorded: a run SIGKILLed at any moment of its end is completed by resume= -----------------

ENDING = [a for a in SMALL if a != "trainer.plots=false"] + ["trainer.epochs=2"]  # with plots: 2 epochs of 4 steps
# (module, attribute, n): the n-th call of the attribute SIGKILLs the run
KILL_POINTS = {
    "final evaluation": ("coordexp.loop", "evaluate", 2),  # before the last checkpoint: its epoch is trained again
    "plots": ("coordexp.plots", "save_png", 1),  # imported by write_plots when it runs
    "tensorboard flush": ("coordexp.tblog", "RunLog.close", 1),
    "metrics write": ("coordexp.run", "write_json", 1),
}
DIE = """
import importlib, os, runpy, signal, sys
module, attribute, nth = {point!r}
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(owner, name, dying)
sys.argv = ["coordexp.train", *{args!r}]
runpy.run_module("coordexp.train", run_name="__main__")  # as python -m coordexp.train runs it
"""


def kill_and_resume(run_dir, point):
    """Run the CLI until it dies at `point`, then resume it: (the checkpoint after the kill, the resume's result)."""
    killed = subprocess.run([sys.executable, "-c", DIE.format(point=point, args=[*ENDING, f"hydra.run.dir={run_dir}"])],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = (run_dir / CHECKPOINT).read_bytes()
    return checkpoint, subprocess.run([sys.executable, "-m", "coordexp.train", f"resume={run_dir}"],
                                      capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def endings(tmp_path_factory):
    """An unkilled run, and each kill point killed then resumed, a few at a time: {name: (dir, checkpoint, result)}."""
    root = tmp_path_factory.mktemp("endings")
    with ThreadPoolExecutor(max_workers=3) as pool:
        reference = pool.submit(subprocess.run, [sys.executable, "-m", "coordexp.train", *ENDING,
                                                 f"hydra.run.dir={root / 'reference'}"], capture_output=True)
        runs = {name: pool.submit(kill_and_resume, root / name.replace(" ", "_"), point)
                for name, point in KILL_POINTS.items()}
    assert reference.result().returncode == 0
    return root / "reference", {name: (root / name.replace(" ", "_"), *run.result()) for name, run in runs.items()}


def test_a_signal_during_the_final_outputs_lets_them_finish(tmp_path):
    sigterm_at_first_plot = DIE.replace("signal.SIGKILL", "signal.SIGTERM").format(
        point=KILL_POINTS["plots"], args=[*ENDING, f"hydra.run.dir={tmp_path}"])
    result = subprocess.run([sys.executable, "-c", sigterm_at_first_plot], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SIGTERM arrived after training ended: the run was completed first" in result.stdout + result.stderr
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["status"] == "completed" and all((tmp_path / name).exists() for name in metrics["outputs"])


@pytest.mark.parametrize("name", KILL_POINTS)
def test_a_run_killed_during_its_ending_is_completed_by_resume_with_the_same_result(endings, name):
    reference, runs = endings
    run_dir, checkpoint, result = runs[name]
    assert result.returncode == 0, result.stderr
    assert final(strict_json(run_dir / "metrics.json")) == final(strict_json(reference / "metrics.json"))
    assert same_weights(run_dir, reference)
    assert {p.name for p in (run_dir / "plots").iterdir()} == {"success_map.png", "positions.png", "parameters.png",
                                                          "input_channels.png", "maps_before_pooling.png"}
    assert not list(run_dir.rglob(".*.tmp"))
    if name != "final evaluation":  # killed after the last checkpoint: nothing is trained again
        assert "training ended at epoch 2: writing the final outputs" in result.stdout + result.stderr
        assert (run_dir / CHECKPOINT).read_bytes() == checkpoint


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


def test_a_run_saved_before_model_padding_resumes_as_the_network_it_trained(tmp_path):
    # runs saved up to 7ff63cc have no model.padding: their stride-2 layers padded both sides alike
    train(make_cfg(*SMALL, "model=conv", "split=quarter", "model.padding=symmetric", "trainer.epochs=1"), tmp_path)
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    del checkpoint["config"]["model"]["padding"]
    torch.save(checkpoint, tmp_path / CHECKPOINT)
    assert load_checkpoint(tmp_path / CHECKPOINT)["config"]["model"]["padding"] == "symmetric"
    result = subprocess.run([sys.executable, "-m", "coordexp.train", f"resume={tmp_path}", "trainer.epochs=2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["config"]["model"]["padding"] == "symmetric"


def test_a_resume_reads_the_checkpoint_once(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "coordexp.train", *SMALL, "trainer.epochs=1",
                            f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    script = f"""
import runpy, sys, torch
loads, real = [], torch.load
def counted(f, *args, **kwargs):
    loads.append(str(f))
    return real(f, *args, **kwargs)
torch.load = counted
sys.argv = ["coordexp.train", "resume={run_dir}", "trainer.epochs=2"]
try:
    runpy.run_module("coordexp.train", run_name="__main__")
finally:
    print("checkpoint reads:", sum(f.endswith("checkpoint.pt") for f in loads))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "checkpoint reads: 1" in result.stdout, result.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
