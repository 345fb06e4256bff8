"""No process of ours outlives the one that started it: after a SIGKILL of a joblib sweep's or a reproduction's
main process its workers stop too (coordexp.rundir.watch_owner), and the same command again completes what is
missing; SIGINT / SIGTERM to a reproduction end it with one line and 130 / 143."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordexp.rundir import CHECKPOINT

REPO = Path(__file__).resolve().parent.parent
# jobs long enough to be killed mid-way (~0.5 s an epoch at canvas 32), short enough for the default suite
LONG_JOBS = ["task=regression", "model=coordconv", "data.canvas=32", "data.square=5", "trainer.epochs=40",
             "trainer.max_steps_per_epoch=4", "trainer.plots=false", "trainer.progress=false"]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids that still run (zombies are dead)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def gone_within(pids: set[int], seconds: float = 10) -> set[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def test_a_sigkilled_joblib_sweep_leaves_no_worker_and_the_same_command_completes_it(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    command = [sys.executable, "-m", "coordexp.train", "-m", *LONG_JOBS, "seed=0,1", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}"]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(list(tmp_path.glob(f"*/{CHECKPOINT}"))) == 2)  # both workers are training
    workers = descendants(sweep.pid)
    assert workers
    sweep.kill()
    sweep.wait()
    assert gone_within(workers) == set()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "2 jobs: 2 completed" in again.stdout + again.stderr


@pytest.mark.parametrize("how", ["SIGINT to its process", "SIGKILL to its process",
                                 pytest.param("SIGTERM to its group", marks=pytest.mark.slow)])
def test_a_reproduction_stopped_leaves_no_process_and_the_same_command_continues_it(tmp_path, how):
    command = [sys.executable, "-m", "coordexp.reproduce", "--tasks", "regression", "--splits", "quarter",
               "--seeds", "0", "--workers", "1", "--out", str(tmp_path), "trainer.epochs=12",
               "trainer.max_steps_per_epoch=4", "data.canvas=32", "data.square=5", "trainer.plots=false"]
    reproduction = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
    wait_for(lambda: list(tmp_path.glob(f"phase1-*/*/*/*/{CHECKPOINT}")))
    ours = descendants(reproduction.pid)
    signum = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}[how.split()[0]]
    if how.endswith("group"):
        os.killpg(reproduction.pid, signum)
    else:
        reproduction.send_signal(signum)
    _, err = reproduction.communicate(timeout=120)
    assert gone_within(ours) == set()
    if signum != signal.SIGKILL:
        assert reproduction.returncode == 128 + signum, err
        assert err.strip().splitlines() == [f"coordexp: the reproduction was stopped by {signum.name}; its "
                                            "finished jobs are kept, and the same command continues it"], err
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "REPORT.md").is_file()


def holder(job_dir: Path) -> int:
    """The pid of the process that holds a run directory, as its lock file names it."""
    return int((job_dir / ".coordexp.lock").read_text().split()[1])


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("killed", ["the job's process", "its joblib worker"])
def test_a_sigkilled_joblib_job_is_recorded_failed_and_the_same_command_completes_only_it(tmp_path, killed):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    command = [sys.executable, "-m", "coordexp.train", "-m", *LONG_JOBS, "seed=0,1,2", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}"]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list(tmp_path.glob(f"*/{CHECKPOINT}"))) == 2)  # jobs 0 and 1 are training
    job = tmp_path / "0_regression-quarter-coordconv"
    pid = holder(job)
    os.kill(pid if killed == "the job's process" else parent(pid), signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 1, err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    rows = {row["job"]: row for row in csv.DictReader(open(tmp_path / "summary.csv"))}
    if killed == "the job's process":  # that job alone failed; the worker went on to the next job
        assert err.startswith("coordexp: 1 of 3 jobs did not complete (1 failed)"), err
        assert [row["status"] for row in rows.values()] == ["failed", "completed", "completed"]
        assert f"(pid {pid}) was killed by SIGKILL" in rows[job.name]["error"]
    else:  # joblib's pool broke: the killed worker's job finished all the same, the other one ran stopped
        assert err.startswith("coordexp: the sweep ended early: A worker process managed by the executor was "
                              "unexpectedly terminated"), err
        assert "(exit codes {SIGKILL(-9)})" in err and "1 not started" in err and "continue it with:" in err
        assert rows[job.name]["status"] == "completed" and len(rows) == 2
    completed = {name: (tmp_path / name / CHECKPOINT).stat().st_mtime_ns
                 for name, row in rows.items() if row["status"] == "completed"}
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "3 jobs: 3 completed" in again.stdout + again.stderr
    assert {name: (tmp_path / name / CHECKPOINT).stat().st_mtime_ns for name in completed} == completed
