"""Run directories written by an older coordexp (tests/fixtures/fab02a4, made at that commit) resume, evaluate and
aggregate as they ran; a saved config that lacks a key whose default could change its result is refused by name."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "fab02a4"


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "two_epochs"
    shutil.copytree(FIXTURES / "two_epochs", run)
    return run


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.steps
def test_an_old_run_resumes_to_the_result_the_old_code_reached_in_one_go(old_run):
    # its saved config has no model.padding: the run had the symmetric padding of its day, and keeps it
    assert "padding" not in torch.load(old_run / "checkpoint.pt", weights_only=False)["config"]["model"]
    result = command("coordexp.train", f"resume={old_run}", "trainer.epochs=4")
    assert result.returncode == 0, result.stderr
    resumed, reference = metrics(old_run), json.loads((FIXTURES / "four_epochs" / "metrics.json").read_text())
    assert resumed["epochs"] == 4 and resumed["test"] != metrics(FIXTURES / "two_epochs")["test"]  # it trained on
    assert (resumed["train"], resumed["test"]) == (reference["train"], reference["test"])  # bit for bit


@pytest.mark.steps
def test_an_old_run_evaluates_to_its_own_result_and_aggregates(old_run, tmp_path):
    result = command("coordexp.evaluate", str(old_run), "--canvases", "64", "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "eval" / "canvases.csv") as f:
        [row] = list(csv.DictReader(f))
    assert float(row["test_pixel_error"]) == metrics(old_run)["test"]["pixel_error"]  # the old padding, as it ran
    result = command("coordexp.aggregate", str(old_run.parent))
    assert result.returncode == 0, result.stderr
    with open(old_run.parent / "summary.csv") as f:
        [row] = list(csv.DictReader(f))
    assert (row["status"], float(row["test_pixel_error"])) == ("completed", metrics(old_run)["test"]["pixel_error"])


@pytest.mark.parametrize("section, key", [("trainer", "target_part"), ("model", "init"), ("data", "split_seed")])
def test_an_old_config_without_a_key_is_refused_by_name_by_resume_and_evaluate(old_run, tmp_path, section, key):
    checkpoint = torch.load(old_run / "checkpoint.pt", weights_only=False)
    del checkpoint["config"][section][key]
    torch.save(checkpoint, old_run / "checkpoint.pt")
    files = lambda: sorted(p.name for p in old_run.iterdir() if p.name != ".coordexp.lock")  # the lock: who holds it
    before = files()
    for args in (["coordexp.train", f"resume={old_run}", "trainer.epochs=4"],
                 ["coordexp.evaluate", str(old_run), "--canvases", "64", "--out", str(tmp_path / "eval")]):
        result = command(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and f"its config has no {section}.{key}" in result.stderr, result.stderr
    assert files() == before and not (tmp_path / "eval").exists()
