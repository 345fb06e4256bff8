"""Where a default run's wall time goes: start-up, building, training, evaluation, plots.

Runs `python -m coordexp.train <overrides>` as a user would (a fresh process each time, into a temporary run
directory), times the whole process, and reads the run's own breakdown of its session from metrics.json
(`session_seconds`); start-up (the interpreter, imports, Hydra's composition, the run directory's claim) is the
rest. Prints one row per repeat and the median, with the ratio of the process's wall time to its training time.

    python scripts/wall_time.py [--repeats 3] [--out F] [task=classification split=quarter model=coordconv ...]
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

from coordexp.rundir import METRICS_FILE, write_json

DEFAULT = ["task=classification", "split=quarter", "model=coordconv"]
PHASES = ("startup", "setup", "train", "evaluate_log_checkpoint", "plots", "exit")


def one_run(overrides: list[str]) -> dict[str, float]:
    """One CLI run's process wall time and its phases, in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        began = time.time()
        subprocess.run([sys.executable, "-m", "coordexp.train", *overrides, f"hydra.run.dir={run_dir}",
                        "trainer.progress=false"], check=True, capture_output=True)
        ended = time.time()
        written = os.stat(run_dir / METRICS_FILE).st_mtime  # the run's last write: its session ends there
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    session = metrics["session_seconds"]
    row = {"wall": ended - began, "startup": written - session["total"] - began, "exit": ended - written}
    row.update({k: session[k] for k in PHASES if k in session})
    row["train_seconds"] = metrics["train_seconds"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help=f"the run's overrides (default: {' '.join(DEFAULT)})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the rows and medians as JSON")
    args = parser.parse_args()
    overrides = args.overrides or DEFAULT
    print(f"python -m coordexp.train {' '.join(overrides)}: seconds per phase, {args.repeats} runs "
          f"(load average {os.getloadavg()[0]:.2f}; run it on an otherwise idle machine)")
    columns = ["wall", *PHASES, "wall / train"]
    print("".join(f"{c:>{max(len(c), 8) + 2}}" for c in columns))
    rows = []
    for _ in range(args.repeats):
        row = one_run(overrides)
        row["wall / train"] = row["wall"] / row["train"]
        rows.append(row)
        print("".join(f"{row.get(c, 0.0):>{max(len(c), 8) + 2}.2f}" for c in columns))
    median = {c: statistics.median(r.get(c, 0.0) for r in rows) for c in columns}
    print("".join(f"{median[c]:>{max(len(c), 8) + 2}.2f}" for c in columns), " (median)")
    if args.out:
        write_json(args.out, {"overrides": overrides, "runs": rows, "median": median})


if __name__ == "__main__":
    main()
