"""One owner per run directory, through the real CLI and real concurrent processes: a held directory refuses
a second run or resume at once; a directory holding a run continues it (same config), reports it (over), or
refuses (another run); default directories never collide; a damaged or unwritable directory is one line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordexp.rundir import CHECKPOINT, LOCK, claim_run_dir

REPO = Path(__file__).resolve().parent.parent
# About a second of work a run: a 16x16 canvas, 2 epochs of 4 steps, no plots.
QUICK = ["task=regression", "model=coordconv", "data.canvas=16", "data.square=5", "trainer.epochs=2",
         "trainer.max_steps_per_epoch=4", "trainer.plots=false", "trainer.progress=false"]
LONG = [*QUICK, "trainer.epochs=100000"]  # runs until it is stopped


def cli(*args, cwd=REPO) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coordexp.train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def ended(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def run(*args, cwd=REPO) -> tuple[int, str]:
    return ended(cli(*args, cwd=cwd))


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def snapshot(directory: Path) -> dict:
    """Every file under `directory` (the lock file aside) with its size and modification time."""
    return {p.relative_to(directory).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file() and p.name != LOCK}


def refused(code: int, output: str, *texts: str) -> None:
    """Exit status 2 and one line on stderr containing `texts`, without a traceback."""
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.startswith("coordexp: error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    for text in texts:
        assert text in lines[0], lines[0]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# --- concurrent processes -------------------------------------------------------------------------------

def test_two_runs_started_at_once_into_one_directory_one_runs_the_other_exits_2(tmp_path):
    run_dir = tmp_path / "run"
    # other seeds: the second is refused whether the first still runs ("in use") or has ended ("another run")
    first, second = cli(*QUICK, "seed=0", f"hydra.run.dir={run_dir}"), cli(*QUICK, "seed=1", f"hydra.run.dir={run_dir}")
    results = [ended(first), ended(second)]
    assert sorted(code for code, _ in results) == [0, 2], results
    code, output = next(r for r in results if r[0] == 2)
    refused(code, output, str(run_dir))
    assert "in use by another coordexp run (pid" in output or "holds another run" in output
    winner = metrics(run_dir)["seed"]  # one run's outputs only, all of them
    assert f"seed: {winner}" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count(f"seed={winner}") == 1
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "train.log").read_text().count(" params, ") == 1


def test_a_held_directory_refuses_a_second_run_or_resume_at_once_naming_its_holder(tmp_path):
    run_dir = tmp_path / "run"
    holder = cli(*LONG, f"hydra.run.dir={run_dir}")
    wait_for(lambda: (run_dir / CHECKPOINT).exists())
    others = {"same run": cli(*LONG, f"hydra.run.dir={run_dir}"),
              "another run": cli(*LONG, "seed=1", f"hydra.run.dir={run_dir}"),
              "resume": cli(f"resume={run_dir}")}
    for name, process in others.items():
        refused(*ended(process), str(run_dir), f"in use by another coordexp run (pid {holder.pid} on ")
    holder.send_signal(signal.SIGTERM)
    code, output = ended(holder)
    assert code == 143, output
    epochs = metrics(run_dir)["epochs"]
    # two resumes at once: one finishes the run, the other is refused (held, or already completed)
    first, second = (cli(f"resume={run_dir}", f"trainer.epochs={epochs + 1}") for _ in range(2))
    results = [ended(first), ended(second)]
    assert sorted(code for code, _ in results) == [0, 2], results
    assert metrics(run_dir)["status"] == "completed" and metrics(run_dir)["epochs"] == epochs + 1


def test_default_run_directories_never_collide(tmp_path):
    processes = [cli(*QUICK, "trainer.epochs=1", cwd=tmp_path) for _ in range(3)]
    assert [ended(p)[0] for p in processes] == [0, 0, 0]
    runs = sorted((tmp_path / "outputs" / "regression-quarter-coordconv").iterdir())
    assert len(runs) == 3 and all(metrics(r)["status"] == "completed" for r in runs)
    assert all("_pid" in r.name for r in runs)  # start time and process id


# --- what a run does in a directory that holds a run --------------------------------------------------------

@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    code, output = run(*QUICK, f"hydra.run.dir={run_dir}")
    assert code == 0, output
    return run_dir


def test_the_same_config_in_a_directory_that_holds_its_completed_run_reports_it_and_trains_nothing(completed):
    before = snapshot(completed)
    code, output = run(*QUICK, f"hydra.run.dir={completed}")
    assert code == 0, output
    assert "already holds this run, completed: not run again" in output
    assert {k: v for k, v in snapshot(completed).items() if k != "train.log"} == \
        {k: v for k, v in before.items() if k != "train.log"}


@pytest.mark.parametrize("args, texts", [
    (["seed=1"], ["holds another run", "seed: 0 there, 1 here", "resume="]),
    (["trainer.epochs=3"], ["holds another run", "trainer.epochs: 2 there, 3 here"]),
    (["trainer.target_part=train"], ["holds another run", "trainer.target_part: held_out there, train here"]),
])
def test_another_config_in_a_directory_that_holds_a_run_is_refused_and_writes_nothing(completed, args, texts):
    before = snapshot(completed)
    refused(*run(*QUICK, *args, f"hydra.run.dir={completed}"), str(completed), *texts)
    assert snapshot(completed) == before


def test_the_same_config_starts_over_a_run_killed_before_its_first_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    die_at_first_step = f"""
import os, runpy, signal, sys
import coordexp.loop
coordexp.loop.train_step = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["coordexp.train", *{[*QUICK, f"hydra.run.dir={run_dir}"]!r}]
runpy.run_module("coordexp.train", run_name="__main__")  # as python -m coordexp.train runs it
"""
    assert subprocess.run([sys.executable, "-c", die_at_first_step]).returncode == -signal.SIGKILL
    assert not (run_dir / CHECKPOINT).exists() and list(run_dir.glob("events.out.tfevents.*"))
    reference = tmp_path / "reference"
    for directory in (run_dir, reference):
        code, output = run(*QUICK, f"hydra.run.dir={directory}")
        assert code == 0, output
    assert {k: metrics(run_dir)[k] for k in ("train", "test", "step")} == \
        {k: metrics(reference)[k] for k in ("train", "test", "step")}
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # the dead attempt's curves are gone


def test_a_diverged_run_is_reported_again_not_retrained(tmp_path):
    args = [*QUICK, "optimizer.lr=1e300", f"hydra.run.dir={tmp_path / 'run'}"]
    code, first = run(*args)
    assert code == 3, first
    before = snapshot(tmp_path / "run")
    code, again = run(*args)
    assert code == 3 and "already holds this run, diverged" in again and "non-finite" in again, again
    assert {k: v for k, v in snapshot(tmp_path / "run").items() if k != "train.log"} == \
        {k: v for k, v in before.items() if k != "train.log"}


# --- a damaged or unwritable directory: one line, exit 2, nothing written --------------------------------------

@pytest.fixture
def interrupted(tmp_path):
    """A run stopped after its first checkpoint (SIGTERM)."""
    run_dir = tmp_path / "run"
    holder = cli(*LONG, f"hydra.run.dir={run_dir}")
    wait_for(lambda: (run_dir / CHECKPOINT).exists())
    holder.send_signal(signal.SIGTERM)
    assert ended(holder)[0] == 143
    return run_dir


def test_a_damaged_checkpoint_is_one_line_and_writes_nothing(interrupted):
    checkpoint = interrupted / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # truncated, as by a full disk
    before = snapshot(interrupted)
    for args in ([f"resume={interrupted}"], [*LONG, f"hydra.run.dir={interrupted}"]):
        refused(*run(*args), str(checkpoint), "cannot be read", "damaged")
        assert snapshot(interrupted) == before


@pytest.fixture
def read_only():
    """Makes a directory unwritable, even for root (chattr +i), and writable again afterwards."""
    made = []

    def make(directory: Path) -> None:
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
                pytest.skip("cannot make a directory read-only for root here (chattr +i)")
        else:
            directory.chmod(0o555)
        made.append(directory)

    yield make
    for directory in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(directory)])
        else:
            directory.chmod(0o755)


def test_a_run_directory_that_cannot_be_written_on_resume_is_one_line_and_writes_nothing(interrupted, read_only):
    before = snapshot(interrupted)
    read_only(interrupted)
    refused(*run(f"resume={interrupted}"), f"resume='{interrupted}'", "cannot write there")
    assert snapshot(interrupted) == before


def test_files_of_a_run_that_cannot_be_identified_are_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    refused(*run(*QUICK, f"hydra.run.dir={tmp_path / 'run'}"), "cannot identify", "metrics.json")


def test_a_process_holds_a_directory_once_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    first = claim_run_dir(tmp_path / "a", {"seed": 0})
    assert claim_run_dir(tmp_path / "a", {"seed": 0}) is first and first.action == "fresh"
    holder = subprocess.Popen([sys.executable, "-c", f"""
from coordexp.rundir import claim_run_dir
import time
claim_run_dir({str(tmp_path / 'b')!r}, {{"seed": 0}})
print("held", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=f"in use by another coordexp run \\(pid {holder.pid} "):
        claim_run_dir(tmp_path / "b", {"seed": 0})
    holder.kill()
    holder.wait()
    second = claim_run_dir(tmp_path / "b", {"seed": 0})  # SIGKILL released it
    assert second.action == "fresh"
    first.release(), second.release()
