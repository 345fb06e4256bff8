"""`python -m coordexp.reproduce`: the plumbing, on runs shrunk to a few steps."""
import subprocess
import sys

from coordexp.reproduce import full_grid_commands


def test_reproduce_runs_every_setting_writes_a_report_and_resumes(tmp_path):
    args = [sys.executable, "-m", "coordexp.reproduce", "--smoke", "--tasks", "regression", "--splits", "quarter",
            "--seeds", "0", "1", "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    report = (tmp_path / "REPORT.md").read_text()
    assert "| regression | quarter | struggles, worst on quarter |" in report
    assert "reproduced" in report and "## The CoordConv regressor" in report
    assert (tmp_path / "REPORT.png").stat().st_size > 0
    # coordconv and its one-hot-1 variant x 2 seeds; mlp, coordmlp x 1 seed; 2 baseline lrs; the best one's 2nd seed
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.json"))
    assert len(runs) == 2 * 2 + 2 * 1 + 2 + 1, runs
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")}
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")} == written  # nothing was rerun


def test_full_prints_the_paper_grids():
    commands = full_grid_commands()
    assert "sweep=classification_conv " in commands and "sweep=rendering_conv " in commands
