"""scripts/bench.py runs end to end and writes what it prints (no timed assertions: it is a benchmark); its
roofline arithmetic and byte count are checked by hand."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    """scripts/bench.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flop_per_s, bytes_per_s, bound, attainable", [
    (1e12, 1e10, "memory", 1e10 / 2e6),  # compute bound 1e12 / 1e6 = 1e6 samples/s, memory bound 5e3
    (1e9, 1e12, "compute", 1e9 / 1e6),  # compute bound 1e3 samples/s, memory bound 5e5
])
def test_roofline_is_the_lower_of_the_compute_and_the_memory_bound(bench, flop_per_s, bytes_per_s, bound, attainable):
    roof = bench.roofline(flop_per_sample=1e6, bytes_per_sample=2e6, flop_per_s=flop_per_s, bytes_per_s=bytes_per_s)
    assert roof["compute_bound_samples_per_s"] == pytest.approx(flop_per_s / 1e6)
    assert roof["memory_bound_samples_per_s"] == pytest.approx(bytes_per_s / 2e6)
    assert roof["bound"] == bound and roof["roofline_samples_per_s"] == pytest.approx(attainable)


def test_minimum_bytes_of_a_tiny_step_match_a_hand_count(bench):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.Adam(model.parameters())
    x, y = torch.randn(5, 4), torch.randn(5, 2)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    moved = bench.minimum_bytes(model, optimizer, (x, y), step)
    params = 4 * (4 * 3 + 3 + 3 * 2 + 2)  # 23 fp32 parameters
    adam_state = 2 * params + 4 * 4  # two moments per parameter and a step count per tensor
    assert moved["parameters"] == params
    assert moved["gradients"] == 2 * params  # written in backward, read by the optimizer
    assert moved["optimizer"] == 2 * params + 2 * adam_state  # parameters and state read and written
    assert moved["batch"] == 4 * (5 * 4 + 5 * 2)
    # saved for backward: x and y (read once, they exist before the step), the second layer's weight (read once),
    # the ReLU's output, also the second layer's input (written and read once), the network's output for the loss
    assert moved["saved_for_backward"] == 4 * (5 * 4 + 5 * 2 + 3 * 2) + 2 * 4 * (5 * 3 + 5 * 2)
    assert moved["total"] == sum(v for k, v in moved.items() if k != "total")


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
    assert results["memory_bytes_per_s"] > 0 and step["bytes_per_step"] == step["bytes_per_step_parts"]["total"] > 0
    bounds = {"compute": step["compute_bound_samples_per_s"], "memory": step["memory_bound_samples_per_s"]}
    assert step["roofline_samples_per_s"] == bounds[step["bound"]] == min(bounds.values())
    assert step["fraction_of_roofline"] == pytest.approx(step["samples_per_s"] / step["roofline_samples_per_s"])
    assert "regression     mlp" in run.stdout and "%roof" in run.stdout
    # what the figures were measured on; the mlp regressor's recipe is fp32, so auto has nothing to choose
    assert results["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and results["cpu"]
    assert isinstance(results["bf16_native"], bool) and results["precision_auto"] == {}


def test_bench_times_both_precisions_of_an_auto_recipe_and_names_autos_choice(bench, capsys):
    from coordexp.precision import resolve_precision
    rows = bench.precision_table([("classification", "coordconv"), ("regression", "coordconv")], torch.device("cpu"),
                                 quick=True)
    [(name, row)] = rows.items()  # the regressor's recipe is fp32: not timed
    assert name == "classification/coordconv" and row["auto"] == resolve_precision("auto", torch.device("cpu"))
    assert row["fp32_seconds"] > 0 and row["bf16_seconds"] > 0
    assert row["auto_over_best"] == pytest.approx(row[f"{row['auto']}_seconds"] / min(row["fp32_seconds"],
                                                                                      row["bf16_seconds"]))
    assert "classification coordconv" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_on_a_missing_gpu_says_so_in_one_line():
    run = subprocess.run([sys.executable, str(BENCH), "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "CUDA is not available" in run.stderr and "Traceback" not in run.stderr


def test_wall_time_splits_a_cli_run_into_its_phases_and_writes_them(tmp_path):
    out = tmp_path / "wall.json"
    run = subprocess.run([sys.executable, str(BENCH.with_name("wall_time.py")), "--repeats", "1", "--out", str(out),
                          "debug=fast", "trainer.plots=false"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].endswith("(median)")
    written = json.loads(out.read_text())
    [row] = written["runs"]
    phases = ("startup", "setup", "train", "evaluate_log_checkpoint", "exit")
    assert all(row[p] >= 0 for p in phases)
    # the phases and the plots (none here) are the whole process, but for closing the TensorBoard log
    assert sum(row[p] for p in phases) + row["plots"] == pytest.approx(row["wall"], abs=0.3)
    assert written["overrides"] == ["debug=fast", "trainer.plots=false"]
