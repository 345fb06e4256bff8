"""aggregate --x KEY --y METRIC: a metric against a swept value, mean and spread over seeds, a line per model."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from coordexp.aggregate import main

REPO = Path(__file__).resolve().parents[1]


def job(root: Path, name: str, overrides: dict, metrics: dict) -> None:
    """A run directory as a sweep job leaves it: .hydra/overrides.yaml and metrics.json."""
    (root / name / ".hydra").mkdir(parents=True)
    OmegaConf.save([f"{k}={v}" for k, v in overrides.items()], root / name / ".hydra" / "overrides.yaml")
    (root / name / "metrics.json").write_text(json.dumps(metrics))


def regression(epochs: int, test_error: float, status: str = "completed") -> dict:
    return {"task": "regression", "split": "quarter", "model": "coordconv", "params": 906, "seed": 0,
            "headline": "pixel_error", "epochs": epochs, "wall_seconds": 1.0, "status": status,
            "train": {"loss": 0.1, "pixel_error": 0.2}, "test": {"loss": 0.1, "pixel_error": test_error}}


@pytest.fixture
def sweep(tmp_path):
    """weight decay {0, 1e-5, 1e-3} x model {coordconv, conv} x seeds {0, 1}; one job failed, one has no value."""
    n = 0
    for model in ("coordconv", "conv"):
        for wd in ("0", "1e-5", "1e-3"):
            for seed in (0, 1):
                epochs = {"0": 10, "1e-5": 20, "1e-3": 40}[wd] + seed * 2 + (100 if model == "conv" else 0)
                job(tmp_path, f"{n}_job", {"model": model, "optimizer.weight_decay": wd, "seed": seed},
                    regression(epochs, 0.1 * epochs))
                n += 1
    job(tmp_path, f"{n}_failed", {"model": "conv", "optimizer.weight_decay": "0", "seed": 2},
        {"status": "failed", "error": "boom"})
    return tmp_path


def table(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_metric_against_a_swept_value_is_averaged_over_seeds_one_line_per_model(sweep):
    assert main([str(sweep), "--x", "optimizer.weight_decay", "--y", "epochs"]) == 0
    rows = table(sweep / "epochs-vs-optimizer.weight_decay.csv")
    # numbers sorted by value (0 < 1e-5 < 1e-3), a group per value of the other swept key, seeds averaged
    assert [(r["group"], r["optimizer.weight_decay"]) for r in rows] == [
        (f"model={m}", wd) for m in ("coordconv", "conv") for wd in ("0", "1e-5", "1e-3")]
    first = rows[0]
    assert (first["n"], float(first["mean"]), float(first["min"]), float(first["max"])) == ("2", 11.0, 10.0, 12.0)
    assert float(first["std"]) == pytest.approx(2 ** 0.5)
    assert float(rows[3]["mean"]) == 111.0  # conv, wd 0: the failed job is not counted
    markdown = (sweep / "epochs-vs-optimizer.weight_decay.md").read_text()
    assert "| model=conv | 1e-3 | 2 | 141 |" in markdown
    assert (sweep / "epochs-vs-optimizer.weight_decay.png").stat().st_size > 0
    assert (sweep / "summary.png").exists()  # the default summary is still written


def test_a_categorical_swept_value_and_a_test_metric(sweep):
    assert main([str(sweep), "--x", "model", "--y", "test_pixel_error"]) == 0
    rows = table(sweep / "test_pixel_error-vs-model.csv")
    assert {r["group"] for r in rows} == {"optimizer.weight_decay=0", "optimizer.weight_decay=1e-5",
                                          "optimizer.weight_decay=1e-3"}
    assert [r["model"] for r in rows[:2]] == ["conv", "coordconv"]  # text values in text order


@pytest.mark.parametrize("args, named, choices", [
    (["--x", "optimizer.lr", "--y", "epochs"], "--x=optimizer.lr", "model, optimizer.weight_decay, seed"),
    (["--x", "model", "--y", "test_iou"], "--y=test_iou", "params, epochs, wall_seconds, train_loss"),
])
def test_a_bad_key_or_metric_is_one_line_exit_2_and_nothing_written(sweep, args, named, choices):
    result = subprocess.run([sys.executable, "-m", "coordexp.aggregate", str(sweep), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert named in result.stderr and choices in result.stderr
    assert not list(sweep.glob("summary*")) and not list(sweep.glob("*-vs-*"))


def test_every_table_cell_is_escaped_text_numbers_to_four_digits():
    from coordexp.results import markdown_table
    table = markdown_table(["job", "value"], [["a|b", 0.123456], [None, 3]]).splitlines()
    assert table[2:] == ["| a\\|b | 0.1235 |", "|  | 3 |"]
