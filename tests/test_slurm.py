"""Sweeps on a real SLURM cluster (`hydra/launcher=slurm`): every job a SLURM job, a cancelled job recorded
and the others done, and a job preempted or timed out mid-run requeued by SLURM, continuing from its
checkpoint to exactly the result of an uninterrupted run.

They need a cluster that answers (`sudo scripts/slurm_cluster.sh up` makes one on this machine) and are
skipped without one, unless COORDEXP_REQUIRE_SLURM=1 (CI) makes that a failure.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# a job of a few seconds of training on one core, checkpointed every epoch
SHORT = ["task=regression", "model=coordconv", "data.canvas=32", "trainer.batch_size=8", "trainer.plots=false",
         "trainer.progress=false"]
JOB_NAME = f"coordexp-test-{os.getpid()}"  # this test session's SLURM jobs, to cancel what a failed test leaves
# one core and a little memory a job, so that the local 2-core node runs two at once
SMALL_JOBS = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
              f"hydra.launcher.name={JOB_NAME}"]


ANSWERING = {"idle", "mixed", "allocated", "completing", "planned"}  # sinfo's %T of a node that takes jobs


def cluster_absent() -> str:
    """Why no SLURM cluster answers here, or '' if one does."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) installed; sudo scripts/slurm_cluster.sh up makes a local cluster"
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    # a trailing * is a node that does not respond; planned is an idle node held for a pending job
    if probe.returncode != 0 or not ANSWERING & set(probe.stdout.split()):
        return f"no SLURM node answers (sinfo: {(probe.stderr or probe.stdout).strip() or 'no node'})"
    return ""


@pytest.fixture(autouse=True)
def cluster():
    reason = cluster_absent()
    if reason and os.environ.get("COORDEXP_REQUIRE_SLURM") == "1":
        pytest.fail(f"COORDEXP_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)


pytestmark = pytest.mark.slurm


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def stop_sweeps():
    """A test that fails leaves no sweep behind: its process is stopped and its SLURM jobs cancelled."""
    yield
    while _started:
        sweep = _started.pop()
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
            subprocess.run(["scancel", "--name", JOB_NAME], check=False)


def start_sweep(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    """`python -m coordexp.train -m OVERRIDES` into sweep_dir, on SLURM, in the background."""
    sweep = subprocess.Popen([sys.executable, "-m", "coordexp.train", "-m", *SMALL_JOBS, *overrides,
                              f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    _started.append(sweep)
    return sweep


def finish(sweep: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    output, _ = sweep.communicate(timeout=timeout)
    return sweep.returncode, output


def summary_rows(sweep_dir: Path) -> dict[int, dict]:
    """The sweep's summary.csv rows by job number."""
    with open(sweep_dir / "summary.csv") as f:
        return {int(row["job"].split("_")[0]): row for row in csv.DictReader(f)}


def slurm_ids(sweep_dir: Path, jobs: int, timeout: float = 120) -> list[str]:
    """The SLURM ids of the sweep's jobs 0..jobs-1 (ARRAY_TASK, or a plain id for a lone job), from submitit's
    folders, once submitted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [p.name for p in (sweep_dir / ".submitit").glob("*") if p.is_dir()]
        ids = [name for name in names if "_" in name] if jobs > 1 else names
        if len(ids) == jobs:
            return sorted(ids, key=lambda name: int(name.rsplit("_", 1)[-1]))
        time.sleep(0.2)
    raise AssertionError(f"the sweep in {sweep_dir} did not submit {jobs} jobs within {timeout} s")


UNSETTLED = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUSPENDED")


def sacct(job: str, timeout: float = 60) -> list[tuple[str, str]]:
    """(job id, state) of every record SLURM's accounting holds for `job`, requeued runs included, once its last
    record has a final state: slurmctld hands a job's end to slurmdbd after submitit has read the job's result."""
    def records():
        out = subprocess.run(["sacct", "-n", "-P", "-X", "--duplicates", "-j", job, "-o", "JobID,State"],
                             capture_output=True, text=True, check=True).stdout
        rows = [tuple(line.split("|")) for line in out.splitlines()]
        return rows if rows and not rows[-1][1].startswith(UNSETTLED) else None
    return wait_for(records, f"SLURM's accounting to record job {job}'s end", timeout)


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def submitit_log(sweep_dir: Path) -> str:
    """What submitit logged in every job of the sweep (its signal handling goes there)."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob("*.err")))


def job_dir(sweep_dir: Path, num: int) -> Path:
    return next(sweep_dir.glob(f"{num}_*"))


def reference_run(run_dir: Path, *overrides: str) -> dict:
    """The same run on one core, uninterrupted, outside SLURM; its metrics.json."""
    subprocess.run([sys.executable, "-m", "coordexp.train", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, timeout=300)
    return json.loads((run_dir / "metrics.json").read_text())


def assert_same_result(run_dir: Path, reference_dir: Path) -> None:
    """Bit-identical final metrics, weights and optimizer state."""
    ran, ref = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference_dir))
    for key in ("status", "epochs", "step", "train", "test"):
        assert ran[key] == ref[key], key
    ran, ref = (torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False) for d in (run_dir, reference_dir))
    for name, tensor in ref["model"].items():
        assert torch.equal(ran["model"][name], tensor), name
    assert repr(ran["optimizer"]["state"]) == repr(ref["optimizer"]["state"])


def assert_continued(run_dir: Path) -> None:
    """The requeued job resumed from a checkpoint in its run directory, not from epoch 0."""
    log = (run_dir / "train.log").read_text()
    assert "resuming after epoch" in log, log


# --- every job a SLURM job ------------------------------------------------------------------------------

def test_a_sweep_runs_every_job_as_a_slurm_job_and_summarises_every_one(tmp_path):
    # the issue's `task=classification split=uniform,quarter model=conv,coordconv trainer.epochs=1`, shrunk
    sweep = start_sweep(tmp_path, "task=classification", "split=uniform,quarter", "model=conv,coordconv",
                        "trainer.epochs=1", "debug=fast", "trainer.plots=false", "+hydra.sweep.mode=0750")
    ids = slurm_ids(tmp_path, 4)
    code, output = finish(sweep)
    assert code == 0, output
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o750"  # the plugin's hydra.sweep.mode, kept
    for job in ids:
        assert sacct(job) == [(job, "COMPLETED")]
    assert sorted((row["split"], row["model"], row["status"]) for row in summary_rows(tmp_path).values()) == [
        (split, model, "completed") for split in ("quarter", "uniform") for model in ("conv", "coordconv")]


def test_a_cancelled_job_is_recorded_with_its_reason_and_the_others_complete(tmp_path):
    sweep = start_sweep(tmp_path, *SHORT, "trainer.epochs=200,2,3")
    ids = slurm_ids(tmp_path, 3)
    wait_for(lambda: (job_dir(tmp_path, 0) / "checkpoint.pt").exists() if list(tmp_path.glob("0_*")) else False,
             "job 0's first checkpoint")
    subprocess.run(["scancel", ids[0]], check=True)
    code, output = finish(sweep)
    assert code == 1, output  # a job did not complete
    assert "1 of 3 jobs did not complete (1 failed)" in output
    rows = summary_rows(tmp_path)
    # submitit lets the job run on after SIGTERM (a preemption's SIGUSR2 may follow); SLURM kills it
    assert rows[0]["status"] == "failed" and f"SLURM job {ids[0]} ended CANCELLED" in rows[0]["error"]
    assert rows[1]["status"] == rows[2]["status"] == "completed"
    assert sacct(ids[0]) == [(ids[0], "CANCELLED by 0")]
    assert sacct(ids[1]) == [(ids[1], "COMPLETED")] and sacct(ids[2]) == [(ids[2], "COMPLETED")]


# --- preempted and timed-out jobs continue --------------------------------------------------------------

@pytest.mark.parametrize("timeout_min, timed_out", [(30, False), (5, True)], ids=["preempted", "timed-out"])
def test_a_signalled_job_is_requeued_and_continues_to_the_result_of_an_uninterrupted_run(tmp_path, timeout_min,
                                                                                        timed_out):
    # submitit's preemption path: SIGUSR2 (its default signal) checkpoints the submission and requeues it. With a
    # limit over 10 minutes submitit takes the signal for a preemption; with 10 or less, for a time-out, requeued
    # only while max_num_timeout allows (the plugin's default, 0, would not: configs/hydra/launcher/slurm.yaml sets it)
    run = [*SHORT, "trainer.epochs=10"]
    sweep = start_sweep(tmp_path / "sweep", *run, f"hydra.launcher.timeout_min={timeout_min}")
    [job] = slurm_ids(tmp_path / "sweep", 1)
    wait_for(lambda: list((tmp_path / "sweep").glob("0_*/checkpoint.pt")), "the job's first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    reference = tmp_path / "reference"
    reference_run(reference, *run)
    code, output = finish(sweep)
    assert code == 0, output
    states = [state for _, state in sacct(job)]
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    assert ("this job is timed-out" in submitit_log(tmp_path / "sweep")) == timed_out
    run_dir = job_dir(tmp_path / "sweep", 0)
    assert_continued(run_dir)
    assert_same_result(run_dir, reference)


@pytest.mark.slow
def test_a_job_that_reaches_its_slurm_time_limit_is_requeued_and_continues_to_the_same_result(tmp_path):
    # SLURM itself signals: it checks time limits every 30 s, so with a 2-minute limit and the signal 60 s
    # before it, the job is signalled 30-60 s after each start; a run of a few minutes' training on one core
    run = [*SHORT, "trainer.epochs=150"]
    sweep = start_sweep(tmp_path / "sweep", *run, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60",
                        "hydra.launcher.max_num_timeout=20")
    [job] = slurm_ids(tmp_path / "sweep", 1)
    reference = tmp_path / "reference"
    reference_run(reference, *run)
    code, output = finish(sweep, timeout=1800)
    assert code == 0, output
    states = [state for _, state in sacct(job)]
    assert "REQUEUED" in states and states[-1] == "COMPLETED", states
    assert "this job is timed-out" in submitit_log(tmp_path / "sweep")
    run_dir = job_dir(tmp_path / "sweep", 0)
    assert_continued(run_dir)
    assert_same_result(run_dir, reference)


# --- the reproduction on the cluster --------------------------------------------------------------------

def test_the_reproduction_runs_its_jobs_as_slurm_jobs_and_reports(tmp_path):
    # the issue's `python -m coordexp.reproduce --tasks classification --seeds 0 --launcher slurm`, shrunk
    out = subprocess.run([sys.executable, "-m", "coordexp.reproduce", "--smoke", "--tasks", "classification",
                          "--splits", "quarter", "--seeds", "0", "--launcher", "slurm", "--out", str(tmp_path),
                          *SMALL_JOBS[1:]], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| classification | quarter |" in (tmp_path / "REPORT.md").read_text()
    runs = [p.parent for p in tmp_path.rglob("metrics.json")]
    assert len(runs) == 1 + 1, runs  # the memorising baseline; coordconv (the extras only with --extras)
    for sweep_dir in {run.parents[2] for run in runs}:  # <phase>/<setting>/<split>/seed<n>
        jobs = [p.name for p in (sweep_dir / ".submitit").glob("*") if p.is_dir()]
        assert jobs and all(sacct(job)[-1][1] == "COMPLETED" for job in jobs), (sweep_dir, jobs)
