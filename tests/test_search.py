"""Optuna searches (`multirun=<pair>_search`): the configs compose over the paper's deconv space, and a tiny search
runs, hands Optuna each trial's test metric and aggregates like any sweep."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from coordexp.config import check
from coordexp.compose import CONFIG_DIR
from conftest import make_cfg

REPO = Path(__file__).resolve().parent.parent
SEARCHES = sorted(p.stem for p in (Path(CONFIG_DIR) / "multirun").glob("*_search*.yaml"))
SPACE = {"optimizer.lr", "optimizer.weight_decay", "trainer.batch_size", "model.fs", "model.mul", "trainer.epochs"}

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the Optuna sweeper: pip install -e '.[search]'")


@pytest.mark.parametrize("name", SEARCHES)
def test_a_search_maximises_the_test_metric_over_the_paper_deconv_space(name):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"multirun={name}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == SPACE | ({"task.loss"} if name.startswith("rendering") else set())
    assert cfg.model.name == "conv" and cfg.task.name == name.split("_")[0]
    check(make_cfg(f"multirun={name}"))


def test_a_tiny_search_runs_its_trials_and_aggregates_like_a_sweep(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "coordexp.train", "multirun=classification_conv_search_quick", "debug=fast",
         "trainer.epochs=1", "trainer.batch_size=16", "model.fs=2", "model.mul=1", "trainer.plots=false",
         "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["completed"] * 3
    rates = [float(row["overrides"].split("optimizer.lr=")[1].split()[0]) for row in rows]
    assert len(set(rates)) == 3 and all(0.001 <= lr <= 0.05 for lr in rates)  # sampled, in the space
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(float(row["test_accuracy"]) for row in rows)
