"""Output paths are checked before the work, and a disk's refusal of a write is said as such: each command refuses a
full or read-only disk under its outputs (a run dir, a sweep dir, evaluate --out, aggregate's DIR) in one line, exit
2, before computing anything and writing nothing; a disk that fills mid-run ends the run in one line naming the file
and the cause, with nothing half-written, and the run continues from its checkpoint once there is room.

The disks are small tmpfs mounts of their own (CI runs as root, where chmod does not stop a write; the permission
cases run where it does)."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordexp.rundir import CHECKPOINT, TEMPORARY

REPO = Path(__file__).resolve().parent.parent
FAST = ["task=regression", "model=coordconv", "data.canvas=32", "debug=fast", "trainer.plots=false"]
CAUSES = {"full": "no space left on device", "read-only": "read-only file system"}


def coordexp(*args: str, module: str = "coordexp.train") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture
def disk(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` under tmp_path; unmounted after the test."""
    mounted = []

    def mount(size: str = "16m") -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"no tmpfs can be mounted here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to its last byte with one file; return it."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2**16)
                f.flush()
        except OSError:
            pass
    return filler


def break_disk(point: Path, fault: str) -> None:
    if fault == "full":
        fill(point)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A completed run directory, to evaluate and aggregate."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = coordexp(*FAST, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    return run_dir


def files(point: Path) -> list[str]:
    return sorted(str(p.relative_to(point)) for p in point.rglob("*"))


@pytest.mark.parametrize("fault", list(CAUSES))
@pytest.mark.parametrize("command", ["train", "sweep", "evaluate", "aggregate", "reproduce"])
def test_outputs_on_a_full_or_read_only_disk_are_refused_before_any_work(disk, finished_run, command, fault):
    point = disk()
    if command == "aggregate":  # its outputs go beside the runs it reads
        shutil.copytree(finished_run, point / "runs" / "run")
    target = point / ("runs" if command == "aggregate" else "out")
    break_disk(point, fault)
    before = files(point)
    args = {"train": lambda: coordexp(*FAST, f"hydra.run.dir={target}"),
            "sweep": lambda: coordexp("-m", *FAST, "seed=0,1", f"hydra.sweep.dir={target}"),
            "evaluate": lambda: coordexp(str(finished_run), "--canvases", "32", "--out", str(target),
                                         module="coordexp.evaluate"),
            "aggregate": lambda: coordexp(str(target), module="coordexp.aggregate"),
            "reproduce": lambda: coordexp("--out", str(target), "--smoke", "--tasks", "regression", "--splits", "quarter",
                                          "--seeds", "0", module="coordexp.reproduce")}
    result = args[command]()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coordexp") and ": error: " in lines[0], result.stderr
    assert str(target) in lines[0] and CAUSES[fault] in lines[0].lower(), lines[0]
    assert "in use" not in lines[0]  # a full disk is not another run's
    assert files(point) == before  # nothing written, nothing computed
    assert "wrote" not in result.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through a directory's permissions")
def test_an_output_directory_without_write_permission_is_refused_before_any_work(tmp_path, finished_run):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = coordexp(str(finished_run), "--canvases", "32", "--out", str(locked / "out"), module="coordexp.evaluate")
    assert result.returncode == 2 and "permission denied" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_disk_that_fills_mid_run_ends_it_in_one_line_and_the_run_continues_once_there_is_room(disk):
    point = disk("16m")
    run_dir = point / "run"
    run = subprocess.Popen([sys.executable, "-m", "coordexp.train", *FAST, "trainer.epochs=60",
                            "trainer.max_steps_per_epoch=4", "trainer.progress=false", f"hydra.run.dir={run_dir}"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / CHECKPOINT).exists():
        assert time.monotonic() < deadline and run.poll() is None, run.communicate()
        time.sleep(0.02)
    filler = fill(point)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"coordexp: error: cannot write {run_dir}/"), err
    assert "no space left on device" in lines[0] and f"resume={run_dir}" in lines[0], err
    assert not list(run_dir.glob(TEMPORARY)) and not list(run_dir.glob(f"*/{TEMPORARY}"))  # nothing half-written
    filler.unlink()
    again = coordexp(f"resume={run_dir}")
    assert again.returncode == 0, again.stderr
    assert '"status": "completed"' in (run_dir / "metrics.json").read_text()


def test_a_sweep_whose_disk_fills_ends_in_one_line_and_exit_1(disk):
    point = disk("16m")
    sweep_dir = point / "sweep"
    sweep = subprocess.Popen([sys.executable, "-m", "coordexp.train", "-m", *FAST, "trainer.epochs=60",
                              "trainer.max_steps_per_epoch=4", "trainer.progress=false", "seed=0,1",
                              f"hydra.sweep.dir={sweep_dir}"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(sweep_dir.glob(f"*/{CHECKPOINT}")):
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()
        time.sleep(0.02)
    fill(point)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"coordexp: error: cannot write {sweep_dir}/"), err
    assert "no space left on device" in lines[0] and "continue the sweep with: python -m coordexp.train" in lines[0]
