"""Run directories written by an older coordexp (tests/fixtures/fab02a4, made at that commit) resume, evaluate and
aggregate as they ran; a saved config that lacks a key whose default could change its result is refused by name."""
import csv
import json
import os
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


# The fixtures were made on an AVX-512 CPU with oneDNN unlimited; another instruction set rounds differently, a
# percent or two after two epochs (docs/machines.md), so there the old code's result is matched within that
SAME_KIND_OF_MACHINE = torch.backends.cpu.get_cpu_capability() == "AVX512" and not os.environ.get("ONEDNN_MAX_CPU_ISA")


@pytest.mark.steps
def test_an_old_run_resumes_to_the_result_the_old_code_reached_in_one_go(old_run):
    # its saved config has no model.padding: the run had the symmetric padding of its day, and keeps it
    assert "padding" not in torch.load(old_run / "checkpoint.pt", weights_only=False)["config"]["model"]
    result = command("coordexp.train", f"resume={old_run}", "trainer.epochs=4")
    assert result.returncode == 0, result.stderr
    assert torch.load(old_run / "checkpoint.pt", weights_only=False)["config"]["model"]["padding"] == "symmetric"
    resumed, reference = metrics(old_run), json.loads((FIXTURES / "four_epochs" / "metrics.json").read_text())
    assert resumed["epochs"] == 4 and resumed["test"] != metrics(FIXTURES / "two_epochs")["test"]  # it trained on
    if SAME_KIND_OF_MACHINE:
        assert (resumed["train"], resumed["test"]) == (reference["train"], reference["test"])  # bit for bit
    else:
        assert resumed["test"]["pixel_error"] == pytest.approx(reference["test"]["pixel_error"], rel=0.05)


@pytest.mark.steps
def test_an_old_run_evaluates_to_its_own_result_and_aggregates(old_run, tmp_path):
    result = command("coordexp.evaluate", str(old_run), "--canvases", "64", "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "eval" / "canvases.csv") as f:
        [row] = list(csv.DictReader(f))
    # the old padding, as it ran (TF's would give 54.50 px, not its 54.84)
    assert float(row["test_pixel_error"]) == pytest.approx(metrics(old_run)["test"]["pixel_error"], rel=1e-5)
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
