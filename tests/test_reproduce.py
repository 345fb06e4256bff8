"""`python -m coordexp.reproduce`: the plumbing, on runs shrunk to a few steps."""
import subprocess
import sys

import pytest

from coordexp.reproduce import Group, full_grid_commands, plan, verdict


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


def group(task, split, model, train, test):
    """A Group whose runs completed with these per-seed train and test headline values."""
    g = Group(task, split, model)
    g.runs = [{"status": "completed", f"train_{g.headline}": a, f"test_{g.headline}": b} for a, b in zip(train, test)]
    return g


@pytest.mark.parametrize("task, split, conv, coord, holds", [
    ("classification", "quarter", ([0.9], [0.0]), ([1.0] * 3, [1.0] * 3), True),
    ("classification", "quarter", ([0.9], [0.0]), ([1.0] * 3, [1.0, 1.0, 0.95]), False),  # every seed must hold
    ("classification", "uniform", ([0.9], [0.88]), ([1.0] * 3, [1.0] * 3), False),  # test above the paper's 86%
    ("classification", "uniform", ([0.4], [0.38]), ([1.0] * 3, [1.0] * 3), False),  # test not below train
    ("classification", "uniform", ([0.4], [0.25]), ([1.0] * 3, [1.0] * 3), True),
    ("rendering", "quarter", ([0.7], [0.2]), ([1.0] * 3, [0.995] * 3), True),
    ("rendering", "quarter", ([0.7], [0.4]), ([1.0] * 3, [0.995] * 3), False),  # deconv above the paper's 0.36
    ("regression", "quarter", ([1.4], [8.4]), ([0.0] * 3, [0.01] * 3), True),
    ("regression", "quarter", ([1.4], [2.0]), ([0.0] * 3, [0.01] * 3), False),  # not far off train
    ("regression", "uniform", ([0.2], [0.3]), ([0.0] * 3, [0.01] * 3), False),  # conv sub-pixel: no struggle
    ("regression", "uniform", ([1.4], [2.0]), ([0.0] * 3, [0.01] * 3), True),
    ("regression", "uniform", ([1.4], [2.0]), ([0.0] * 3, [0.01, 0.01, 0.7]), False),
])
def test_verdict_follows_the_papers_claims(task, split, conv, coord, holds):
    ok, why = verdict(task, split, group(task, split, "conv", *conv), group(task, split, "coordconv", *coord))
    assert ok is holds, why


def test_the_papers_renderer_runs_only_when_asked():
    default, _ = plan(["rendering"], ["quarter"])
    asked, _ = plan(["rendering"], ["quarter"], renderer_softmax=True)
    assert {g.name for g in asked} - {g.name for g in default} == {"rendering-quarter-coordconv-softmax"}
    assert next(g for g in asked if g.variant == "softmax").overrides == ["model.centre_map=softmax"]
