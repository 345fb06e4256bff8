"""Benchmark: the framework's training step and time to the paper's result, on this machine.

For each (task, model), with the recipe's config (quarter split): samples/s of `coordexp.loop.train_step`, its
FLOP/s (counted with torch.utils.flop_counter on one step) against bf16 and fp32 matrix-product peaks measured
in the same run, its roofline (the lower of the compute bound, the peak of the step's precision over its FLOP
per sample, and the memory bound, a STREAM bandwidth measured in the same run over the bytes per sample the step
must move at minimum) and the fraction of it the step reaches, and the ratio to a plain reference measured in
the same run: the same model with PLAIN's
overrides (plain layers, fp32, unfused Adam) and glibc's default allocator (in a subprocess, since the
allocator setting is process-wide). Then, for the CoordConv models, seconds of training to the paper's result
on the quarter split, over seeds, through `coordexp.train.train` with trainer.target set. For the recipes that
say trainer.precision=auto, a step's time in fp32 and in bf16 and which one auto chose (alone: --precision-only).
It prints what it ran on: the CPU model, ATen's and oneDNN's instruction sets, whether bf16 is native.

    python scripts/bench.py [--device auto|cpu|cuda] [--tasks ...] [--models ...] [--seeds 5] [--quick] [--out F]
    python scripts/bench.py --precision-only --tasks classification rendering --models conv coordconv
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from coordexp import claims
from coordexp.config import FAMILIES, TASKS, ConfigError
from coordexp.runtime import resolve_device
from coordexp.rundir import write_json
from coordexp.loop import reached, train_step
from coordexp.pointwise import fused_flop_counts
from coordexp.precision import cpu_model, describe_cpu, native_bf16, onednn_isa, resolve_precision
from coordexp.runtime import keep_freed_memory
from coordexp.tasks import build_task
from coordexp.compose import compose_config
from coordexp.run import build_run, seed_everything, train

PLAIN = ["model.fast=false", "trainer.precision=fp32", "optimizer.fused=false"]
# elements of each STREAM array: 256 MB in fp32, 8x this CPU's 32 MB L3 and 5x an H100's L2, so it measures memory
STREAM_ELEMENTS = 2 ** 26


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


def memory_bandwidth(device: torch.device, quick: bool) -> float:
    """Best bytes/s of STREAM's copy (b = a) and triad (a = b + 3c) on fp32 arrays far larger than the caches,
    with torch's threads; counted as STREAM counts them, bytes read plus bytes written."""
    a, b, c = (torch.rand(STREAM_ELEMENTS, device=device) for _ in range(3))
    windows = 3 if quick else 6
    copy = 2 * a.nbytes / best_seconds(lambda: b.copy_(a), device, reps=2, windows=windows)
    triad = 3 * a.nbytes / best_seconds(lambda: torch.add(b, c, alpha=3.0, out=a), device, reps=2, windows=windows)
    return max(copy, triad)


def minimum_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...],
                  step) -> dict[str, int]:
    """A lower bound on the bytes one call of `step` (forward, backward, optimizer step) moves to and from memory,
    counted on one call: each parameter read in forward, its gradient written in backward, the optimizer reading
    each parameter, gradient and state tensor and writing each parameter and state tensor (Adam: 2 moments), the
    batch read once, and every tensor autograd saves for backward read once in backward and, if the step created
    it (an activation, a bf16 copy of a weight), written once in forward, in the dtype it was saved in. Products'
    outputs that are not saved, and gradients of activations, could stay in the caches of a fused kernel: not
    counted. A bound for working sets beyond the caches: one that fits in them is not held to it."""
    existing = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), *batch]}
    sizes: dict[int, int] = {}  # storage -> its bytes
    views: dict[int, dict[tuple, int]] = {}  # storage -> distinct views of it saved -> their bytes

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        sizes[storage.data_ptr()] = storage.nbytes()
        views.setdefault(storage.data_ptr(), {})[(t.storage_offset(), tuple(t.shape), t.stride())] = t.nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    # a storage saved several times (a ReLU's output is also the next layer's input) is written and read once
    saved = {ptr: min(sizes[ptr], sum(seen.values())) for ptr, seen in views.items()}
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    states = [v for p in params for v in optimizer.state[p].values() if torch.is_tensor(v)]
    count = {"parameters": sum(p.nbytes for p in model.parameters()),
             "gradients": 2 * sum(p.grad.nbytes for p in params),
             "optimizer": 2 * sum(p.nbytes for p in params) + 2 * sum(v.nbytes for v in states),
             "batch": sum(t.nbytes for t in batch),
             "saved_for_backward": sum(n * (1 if ptr in existing else 2) for ptr, n in saved.items())}
    return {**count, "total": sum(count.values())}


def roofline(flop_per_sample: float, bytes_per_sample: float, flop_per_s: float, bytes_per_s: float) -> dict:
    """Attainable samples/s of a step: the lower of its compute bound (peak FLOP/s over FLOP per sample) and its
    memory bound (bandwidth over bytes per sample), and which of the two binds."""
    compute, memory = flop_per_s / flop_per_sample, bytes_per_s / bytes_per_sample
    return {"compute_bound_samples_per_s": compute, "memory_bound_samples_per_s": memory,
            "roofline_samples_per_s": min(compute, memory), "bound": "compute" if compute <= memory else "memory"}


def step_setup(overrides: list[str], device: torch.device):
    """The framework's pieces for one (task, model) as its recipe configures them, a batch, and its step."""
    cfg = compose_config(*overrides, f"device={device.type}")
    seed_everything(cfg.seed)
    task, data, model, optimizer = build_run(cfg, device)
    idx = data.train_idx[:cfg.trainer.batch_size]
    inputs, targets = data.inputs[idx], data.targets[idx]

    used = resolve_precision(cfg.trainer.precision, device)

    def step() -> torch.Tensor:
        return train_step(model, task, optimizer, inputs, targets, used)
    return cfg, used, model, optimizer, (inputs, targets), step


def step_speed(overrides: list[str], device: torch.device, quick: bool) -> dict:
    """Samples/s, FLOPs and minimum bytes moved of one training step of the composed config."""
    cfg, used, model, optimizer, batch, step = step_setup(overrides, device)
    seconds = best_seconds(step, device, reps=5 if quick else 10, windows=3 if quick else 6)
    with FlopCounterMode(display=False, custom_mapping=fused_flop_counts()) as counter:
        step()
    moved = minimum_bytes(model, optimizer, batch, step)
    return {"batch_size": cfg.trainer.batch_size, "precision": used,
            "samples_per_s": cfg.trainer.batch_size / seconds, "flop_per_step": counter.get_total_flops(),
            "flop_per_s": counter.get_total_flops() / seconds, "bytes_per_step": moved["total"],
            "bytes_per_step_parts": moved}


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
    """Seconds of training (evaluations excluded) until the test headline metric reaches the paper's result (the
    claims.solved), looked at after every epoch (whatever the recipe's eval_every) so the result is seen in the
    epoch it is reached."""
    target = claims.solved(task)
    cfg = compose_config(f"task={task}", "split=quarter", "model=coordconv", f"seed={seed}", f"device={device.type}",
                         f"trainer.target={target}", "trainer.eval_every=1", "trainer.plots=false",
                         "trainer.progress=false")
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(cfg, Path(run_dir))
    return {"seed": seed, "reached": reached(build_task(cfg.task, cfg.data), metrics["test"], target),
            "train_seconds": metrics["train_seconds"], "wall_seconds": metrics["wall_seconds"],
            "epochs": metrics["epochs"], "test": metrics["test"][metrics["headline"]]}


def peaks(device: torch.device, quick: bool) -> dict[str, float]:
    """Matrix-product FLOP/s per precision and memory bytes/s."""
    return {"bf16": matmul_peak(torch.bfloat16, device, quick), "fp32": matmul_peak(torch.float32, device, quick),
            "memory": memory_bandwidth(device, quick)}


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
    print(f"device {device}{f' ({describe_cpu()})' if device.type == 'cpu' else ''}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} (other "
          f"processes skew every number); matrix-product peak: bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s, "
          f"fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s; memory bandwidth {peak['memory'] / 1e9:.1f} GB/s\n")
    print(f"{'task':<15}{'model':<10}{'batch':>6}{'prec':>6}{'samples/s':>11}{'GFLOP/s':>9}{'%bf16':>7}"
          f"{'%fp32':>7}{'ref/s':>8}{'x ref':>7}{'MB/step':>9}{'bound':>8}{'roof/s':>9}{'%roof':>7}")
    for (task, model), speed in zip(pairs, steps.values()):
        ref = references[(task, model)]
        batch = speed["batch_size"]
        speed.update(reference_samples_per_s=ref, speedup=speed["samples_per_s"] / ref,
                     fraction_of_bf16_peak=speed["flop_per_s"] / peak["bf16"],
                     fraction_of_fp32_peak=speed["flop_per_s"] / peak["fp32"],
                     **roofline(speed["flop_per_step"] / batch, speed["bytes_per_step"] / batch,
                                peak[speed["precision"]], peak["memory"]))
        speed["fraction_of_roofline"] = speed["samples_per_s"] / speed["roofline_samples_per_s"]
        print(f"{task:<15}{model:<10}{batch:>6}{speed['precision']:>6}{speed['samples_per_s']:>11.0f}"
              f"{speed['flop_per_s'] / 1e9:>9.1f}{100 * speed['fraction_of_bf16_peak']:>7.1f}"
              f"{100 * speed['fraction_of_fp32_peak']:>7.1f}{ref:>8.0f}{speed['speedup']:>7.1f}"
              f"{speed['bytes_per_step'] / 1e6:>9.2f}{speed['bound']:>8}{speed['roofline_samples_per_s']:>9.0f}"
              f"{100 * speed['fraction_of_roofline']:>7.1f}")
    return {"peak_flop_per_s": {k: peak[k] for k in ("bf16", "fp32")}, "memory_bytes_per_s": peak["memory"],
            "train_step": steps}


def precision_table(pairs: list[tuple[str, str]], device: torch.device, quick: bool) -> dict:
    """Per recipe that says trainer.precision=auto: a step's seconds in fp32 and in bf16, timed alternately in one
    process, and which one auto chose here; prints it."""
    print("\ntrainer.precision=auto on this machine: seconds per training step (best of alternating windows)")
    print(f"{'task':<15}{'model':<10}{'fp32 ms':>9}{'bf16 ms':>9}{'bf16/fp32':>10}{'auto':>6}{'auto/best':>10}")
    results = {}
    for task, model in pairs:
        base = [f"task={task}", "split=quarter", f"model={model}"]
        if compose_config(*base).trainer.precision != "auto":
            continue
        steps = {p: step_setup([*base, f"trainer.precision={p}"], device)[-1] for p in ("fp32", "bf16")}
        seconds = {p: float("inf") for p in steps}
        for _ in range(2 if quick else 4):
            for p, step in steps.items():
                seconds[p] = min(seconds[p], best_seconds(step, device, reps=3 if quick else 8, windows=1))
        chosen = resolve_precision("auto", device)
        row = {"fp32_seconds": seconds["fp32"], "bf16_seconds": seconds["bf16"], "auto": chosen,
               "auto_over_best": seconds[chosen] / min(seconds.values())}
        results[f"{task}/{model}"] = row
        print(f"{task:<15}{model:<10}{1e3 * seconds['fp32']:>9.2f}{1e3 * seconds['bf16']:>9.2f}"
              f"{seconds['bf16'] / seconds['fp32']:>10.2f}{chosen:>6}{row['auto_over_best']:>10.2f}")
    return results


def result_table(tasks: list[str], seeds: int, device: torch.device) -> dict:
    """Time to the paper's result of the CoordConv model on the quarter split, per task over seeds; prints it."""
    print(f"\ntime to result, coordconv, quarter split, seeds 0-{seeds - 1} "
          "(seconds of training, evaluations excluded)")
    results = {}
    for task in tasks:
        runs = [time_to_result(task, seed, device) for seed in range(seeds)]
        times = [r["train_seconds"] for r in runs]
        n_reached = sum(r["reached"] for r in runs)
        results[task] = {"target": claims.solved(task), "runs": runs, "reached": n_reached,
                         "median_train_seconds": statistics.median(times)}
        print(f"{task:<15}target {claims.solved(task):<5} reached {n_reached}/{len(runs)}  "
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
    parser.add_argument("--precision-only", action="store_true",
                        help="only the fp32 and bf16 step times of the auto recipes, and auto's choice")
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
               "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "onednn_isa": onednn_isa(), "bf16_native": native_bf16(device.type)}
    if args.precision_only:
        print(f"device {device}{f' ({describe_cpu()})' if device.type == 'cpu' else ''}, "
              f"{torch.get_num_threads()} threads")
    else:
        results.update(step_table(pairs, device, args.quick))
    results["precision_auto"] = precision_table(pairs, device, args.quick)
    if args.seeds and "coordconv" in args.models and not args.precision_only:
        results["time_to_result"] = result_table(args.tasks, args.seeds, device)
    results["load_average"] = os.getloadavg()[0]
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
