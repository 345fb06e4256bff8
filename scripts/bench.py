"""Benchmark: the framework's training step and time to the paper's result, on this machine.

For each (task, model), with the recipe's config (quarter split): samples/s of `coordexp.loop.train_step`, its
FLOP/s (counted with torch.utils.flop_counter on one step) against bf16 and fp32 matrix-product peaks measured
in the same run, and the ratio to a plain reference measured in the same run: the same model with PLAIN's
overrides (plain layers, fp32, unfused Adam) and glibc's default allocator (in a subprocess, since the
allocator setting is process-wide). Then, for the CoordConv models, seconds of training to the paper's result
on the quarter split, over seeds, through `coordexp.train.train` with trainer.target set.

    python scripts/bench.py [--device auto|cpu|cuda] [--tasks ...] [--models ...] [--seeds 5] [--quick] [--out F]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from coordexp.config import ConfigError
from coordexp.runtime import resolve_device
from coordexp.rundir import write_json
from coordexp.loop import reached, train_step
from coordexp.models import FAMILIES
from coordexp.runtime import keep_freed_memory
from coordexp.tasks import TASK_CLASSES, TASKS, build_task
from coordexp.train import build_run, compose_config, seed_everything, train

# The paper's CoordConv results on the quarter split, as trainer.target values of each task's headline metric.
TARGETS = {name: cls.solved for name, cls in TASK_CLASSES.items()}
PLAIN = ["model.fast=false", "trainer.precision=fp32", "optimizer.fused=false"]
# coordexp.pointwise's fused linear + ReLU is not in torch's FLOP registry: x (M, in) @ w.T (in, out)
FUSED_FLOPS = {torch.ops.mkldnn._linear_pointwise:
               lambda x_shape, w_shape, *args, **kwargs: 2 * math.prod(x_shape) * w_shape[0]}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_seconds(fn, device: torch.device, reps: int, windows: int) -> float:
    """Fastest of `windows` timings of `reps` calls, per call: the machine is shared, the minimum is the signal."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def matmul_peak(dtype: torch.dtype, device: torch.device, quick: bool) -> float:
    """Best FLOP/s of a square matrix product in `dtype` over a few sizes (the best size depends on the caches)."""
    best = 0.0
    for n in ((512, 1024, 2048) if device.type == "cpu" else (4096, 8192)):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        reps = max(1, 2 ** 31 // n ** 3)  # about 2 GFLOP per timing window
        best = max(best, 2 * n ** 3 / best_seconds(lambda: a @ b, device, reps, windows=3 if quick else 6))
    return best


def step_setup(overrides: list[str], device: torch.device):
    """The framework's pieces for one (task, model) as its recipe configures them, and a batch to step on."""
    cfg = compose_config(*overrides, f"device={device.type}")
    seed_everything(cfg.seed)
    task, data, model, optimizer = build_run(cfg, device)
    idx = data.train_idx[:cfg.trainer.batch_size]
    inputs, targets = data.inputs[idx], data.targets[idx]
    return cfg, lambda: train_step(model, task, optimizer, inputs, targets, cfg.trainer.precision)


def step_speed(overrides: list[str], device: torch.device, quick: bool) -> dict:
    """Samples/s and FLOPs of one training step of the composed config."""
    cfg, step = step_setup(overrides, device)
    seconds = best_seconds(step, device, reps=5 if quick else 10, windows=3 if quick else 6)
    with FlopCounterMode(display=False, custom_mapping=FUSED_FLOPS) as counter:
        step()
    return {"batch_size": cfg.trainer.batch_size, "precision": cfg.trainer.precision,
            "samples_per_s": cfg.trainer.batch_size / seconds, "flop_per_step": counter.get_total_flops(),
            "flop_per_s": counter.get_total_flops() / seconds}


def reference_speeds(pairs: list[tuple[str, str]], device: torch.device, quick: bool) -> dict:
    """Plain-reference samples/s, each (task, model) in a fresh process: glibc's allocator starts from its
    defaults (an earlier model's large frees would have raised its dynamic mmap threshold)."""
    speeds = {}
    for task, model in pairs:
        args = [sys.executable, __file__, "--reference", "--device", device.type, "--tasks", task, "--models", model]
        out = subprocess.run(args + (["--quick"] if quick else []), capture_output=True, text=True, check=True).stdout
        speeds[(task, model)] = json.loads(out)[f"{task}/{model}"]["samples_per_s"]
    return speeds


def time_to_result(task: str, seed: int, device: torch.device) -> dict:
    """Seconds of training (evaluations excluded) until the test headline metric reaches TARGETS[task]."""
    cfg = compose_config(f"task={task}", "split=quarter", "model=coordconv", f"seed={seed}", f"device={device.type}",
                         f"trainer.target={TARGETS[task]}", "trainer.plots=false", "trainer.progress=false")
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(cfg, Path(run_dir))
    return {"seed": seed, "reached": reached(build_task(cfg.task, cfg.data), metrics["test"], TARGETS[task]),
            "train_seconds": metrics["train_seconds"], "wall_seconds": metrics["wall_seconds"],
            "epochs": metrics["epochs"], "test": metrics["test"][metrics["headline"]]}


def peaks(device: torch.device, quick: bool) -> dict[str, float]:
    return {"bf16": matmul_peak(torch.bfloat16, device, quick), "fp32": matmul_peak(torch.float32, device, quick)}


def step_table(pairs: list[tuple[str, str]], device: torch.device, quick: bool) -> dict:
    """Training-step speed of every (task, model) against the peaks and the plain reference; prints a table."""
    # the peaks and the reference are measured before and after the framework's steps and the best is kept:
    # other processes only ever slow a timing down, so this is the conservative choice for the ratios
    ref_before = reference_speeds(pairs, device, quick)
    keep_freed_memory()
    before = peaks(device, quick)
    steps = {f"{t}/{m}": step_speed([f"task={t}", "split=quarter", f"model={m}"], device, quick) for t, m in pairs}
    after = peaks(device, quick)
    ref_after = reference_speeds(pairs, device, quick)
    peak = {k: max(before[k], after[k]) for k in before}
    references = {k: max(ref_before[k], ref_after[k]) for k in ref_before}
    print(f"device {device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} (other "
          f"processes skew every number); matrix-product peak: bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s, "
          f"fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s\n")
    print(f"{'task':<15}{'model':<10}{'batch':>6}{'prec':>6}{'samples/s':>11}{'GFLOP/s':>9}{'%bf16':>7}"
          f"{'%fp32':>7}{'ref/s':>8}{'x ref':>7}")
    for (task, model), speed in zip(pairs, steps.values()):
        ref = references[(task, model)]
        speed.update(reference_samples_per_s=ref, speedup=speed["samples_per_s"] / ref,
                     fraction_of_bf16_peak=speed["flop_per_s"] / peak["bf16"],
                     fraction_of_fp32_peak=speed["flop_per_s"] / peak["fp32"])
        print(f"{task:<15}{model:<10}{speed['batch_size']:>6}{speed['precision']:>6}{speed['samples_per_s']:>11.0f}"
              f"{speed['flop_per_s'] / 1e9:>9.1f}{100 * speed['fraction_of_bf16_peak']:>7.1f}"
              f"{100 * speed['fraction_of_fp32_peak']:>7.1f}{ref:>8.0f}{speed['speedup']:>7.1f}")
    return {"peak_flop_per_s": peak, "train_step": steps}


def result_table(tasks: list[str], seeds: int, device: torch.device) -> dict:
    """Time to the paper's result of the CoordConv model on the quarter split, per task over seeds; prints it."""
    print(f"\ntime to result, coordconv, quarter split, seeds 0-{seeds - 1} "
          "(seconds of training, evaluations excluded)")
    results = {}
    for task in tasks:
        runs = [time_to_result(task, seed, device) for seed in range(seeds)]
        times = [r["train_seconds"] for r in runs]
        n_reached = sum(r["reached"] for r in runs)
        results[task] = {"target": TARGETS[task], "runs": runs, "reached": n_reached,
                         "median_train_seconds": statistics.median(times)}
        print(f"{task:<15}target {TARGETS[task]:<5} reached {n_reached}/{len(runs)}  "
              f"median {statistics.median(times):.2f}s  max {max(times):.2f}s  "
              f"({', '.join(f'{t:.2f}' for t in times)}; epochs {', '.join(str(r['epochs']) for r in runs)})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--models", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seeds", type=int, default=5, help="seeds for time to result (0 skips it)")
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)  # the subprocess's role
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except ConfigError as error:  # e.g. --device cuda without CUDA: one line, not a traceback
        parser.exit(2, f"bench.py: error: {error}\n")
    pairs = [(t, m) for t in args.tasks for m in args.models]
    if args.reference:
        print(json.dumps({f"{t}/{m}": step_speed([f"task={t}", "split=quarter", f"model={m}", *PLAIN], device,
                                                  args.quick) for t, m in pairs}))
        return
    results = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               **step_table(pairs, device, args.quick)}
    if args.seeds and "coordconv" in args.models:
        results["time_to_result"] = result_table(args.tasks, args.seeds, device)
    results["load_average"] = os.getloadavg()[0]
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
