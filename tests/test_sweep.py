"""Sweeps: any folder of runs aggregates into one summary row per job."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from coordexp.aggregate import aggregate

REPO = Path(__file__).resolve().parent.parent


def summary_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


# --- aggregation of any folder of runs -----------------------------------------------------------------

def fake_run(run_dir: Path, metrics: dict | None, task="classification", split="quarter", model="conv"):
    """A run directory as train() leaves it: .hydra/ with the config and overrides, metrics.json if it ended."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"task": {"name": task}, "split": {"name": split}, "model": {"name": model}}
    OmegaConf.save(config, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save([f"task={task}", f"split={split}", f"model={model}"], run_dir / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


def completed(model: str, train: float, test: float) -> dict:
    return {"task": "classification", "split": "quarter", "model": model, "params": 7553, "seed": 0,
            "headline": "accuracy", "epochs": 2, "wall_seconds": 3.5, "status": "completed",
            "train": {"loss": 0.1, "accuracy": train}, "test": {"loss": 0.2, "accuracy": test}}


def test_aggregate_reads_a_sweep_cut_short(tmp_path):
    fake_run(tmp_path / "0_a", completed("conv", 1.0, 0.0))
    fake_run(tmp_path / "1_b", completed("coordconv", 1.0, 1.0))
    fake_run(tmp_path / "2_c", {"status": "failed", "error": "ValueError('boom | bang')"})
    fake_run(tmp_path / "10_d", None, split="uniform")  # started, never finished
    rows = aggregate(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0_a", "completed"), ("1_b", "completed"), ("2_c", "failed"), ("10_d", "missing")]
    assert (rows[3]["task"], rows[3]["split"], rows[3]["model"]) == ("classification", "uniform", "conv")
    written = summary_rows(tmp_path)
    assert [r["status"] for r in written] == ["completed", "completed", "failed", "missing"]
    assert written[1]["overrides"] == "task=classification split=quarter model=conv"
    assert (written[0]["train_accuracy"], written[0]["test_accuracy"], written[0]["params"]) == ("1.0", "0.0", "7553")
    markdown = (tmp_path / "summary.md").read_text()
    assert "4 jobs: 2 completed, 1 failed, 1 missing" in markdown and "boom \\| bang" in markdown
    assert (tmp_path / "summary.png").stat().st_size > 0
    assert not list(tmp_path.glob(".summary*"))  # no temporary files left


def test_aggregate_cli(tmp_path):
    fake_run(tmp_path / "runs" / "nested" / "run1", completed("coordconv", 1.0, 1.0))
    result = subprocess.run([sys.executable, "-m", "coordexp.aggregate", str(tmp_path / "runs")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 job: 1 completed" in result.stdout
    assert [r["job"] for r in summary_rows(tmp_path / "runs")] == ["nested/run1"]
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "coordexp.aggregate", str(tmp_path / "empty")], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no runs" in result.stderr
