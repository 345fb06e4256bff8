"""scripts/bench.py runs end to end and writes what it prints (no timed assertions: it is a benchmark)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_bench_measures_a_step_against_the_peak_and_the_plain_reference(tmp_path):
    out = tmp_path / "bench.json"
    args = [sys.executable, str(BENCH), "--quick", "--tasks", "regression", "--models", "mlp", "--seeds", "0",
            "--device", "cpu", "--out", str(out)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    step = results["train_step"]["regression/mlp"]
    assert step["samples_per_s"] > 0 and step["reference_samples_per_s"] > 0
    assert step["speedup"] == pytest.approx(step["samples_per_s"] / step["reference_samples_per_s"])
    assert step["flop_per_s"] == pytest.approx(step["flop_per_step"] * step["samples_per_s"] / step["batch_size"])
    assert 0 < step["fraction_of_bf16_peak"] == pytest.approx(step["flop_per_s"] / results["peak_flop_per_s"]["bf16"])
    assert "regression     mlp" in run.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_on_a_missing_gpu_says_so_in_one_line():
    run = subprocess.run([sys.executable, str(BENCH), "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "CUDA is not available" in run.stderr and "Traceback" not in run.stderr
