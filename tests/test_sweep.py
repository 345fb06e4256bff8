"""Sweeps: the paper's grids compose with the sizes they claim; a multirun writes one summary row per job,
survives a failing job and says so in its exit status; the launchers; TensorBoard sees one run per job."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coordexp.aggregate import aggregate
from coordexp.config import validate
from coordexp.sweep import planned_jobs
from coordexp.train import CONFIG_DIR
from conftest import make_cfg

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted(p.stem for p in (Path(CONFIG_DIR) / "sweep").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
TINY = ["task=regression", "model=coordconv", "data.canvas=32", "debug=fast", "trainer.plots=false"]  # ~1 s a job


def compose_with_hydra(*overrides: str):
    """The config with its hydra node, as `python -m coordexp.train -m OVERRIDES` sees it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def multirun(sweep_dir: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordexp.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def summary_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


# --- the paper's grids and settings ---------------------------------------------------------------------

@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_config_composes_with_the_grid_size_it_claims(name):
    claimed = int(re.search(r"(\d+) runs per split", (Path(CONFIG_DIR) / "sweep" / f"{name}.yaml").read_text())[1])
    cfg = compose_with_hydra(f"sweep={name}")
    assert planned_jobs(cfg) == claimed
    for key, values in cfg.hydra.sweeper.params.items():  # every swept value gives a valid run
        for value in str(values).split(","):
            validate(make_cfg(f"sweep={name}", f"{key}={value}"))


def test_the_paper_deconv_grids_have_the_paper_sizes_and_l2_as_twice_the_weight_decay():
    assert planned_jobs(compose_with_hydra("sweep=classification_conv")) == 324
    assert planned_jobs(compose_with_hydra("sweep=rendering_conv")) == 648
    params = compose_with_hydra("sweep=classification_conv").hydra.sweeper.params
    assert [float(v) for v in params["optimizer.weight_decay"].split(",")] == [2 * l2 for l2 in (0, 1e-3, 1e-2)]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_pins_its_task_model_and_the_paper_setting_over_the_recipe(name):
    task, model = name.split("_")
    for split in ("uniform", "quarter"):
        cfg = make_cfg(f"experiment={name}", f"split={split}")
        validate(cfg)
        assert (cfg.task.name, cfg.model.name, cfg.split.name) == (task, model, split)
        assert cfg.trainer.batch_size in (16, 256)  # the paper's, not the recipe's
        assert cfg.schedule.name == ("step" if model == "conv" and task != "regression" else "constant")


# --- launcher configs ----------------------------------------------------------------------------------

def test_slurm_launcher_composes_with_its_defaults():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task, launcher.max_num_timeout) == ("gpu", 2, 3)


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


# --- real sweeps on the command line -------------------------------------------------------------------

@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    """4 tiny jobs on 2 joblib workers: (sweep dir, the process's result)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path_factory.mktemp("joblib") / "sweep"
    result = multirun(sweep_dir, *TINY, "split=uniform,quarter", "seed=0,1", "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2")
    return sweep_dir, result


def test_joblib_sweep_writes_one_summary_row_per_job(joblib_sweep):
    sweep_dir, result = joblib_sweep
    assert result.returncode == 0, result.stderr
    rows = summary_rows(sweep_dir)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert {(r["split"], r["seed"]) for r in rows} == {(s, n) for s in ("uniform", "quarter") for n in ("0", "1")}
    for row in rows:
        assert "debug=fast" in row["overrides"] and float(row["wall_seconds"]) > 0 and row["params"] == "906"
        assert float(row["train_pixel_error"]) >= 0 and float(row["test_pixel_error"]) >= 0
    assert "4 jobs: 4 completed" in (sweep_dir / "summary.md").read_text()
    assert (sweep_dir / "summary.png").exists()


def test_joblib_sweep_logs_a_progress_line_per_job_with_cores_shared_between_jobs(joblib_sweep):
    sweep_dir, _ = joblib_sweep
    lines = (sweep_dir / "sweep.log").read_text().splitlines()
    progress = [line for line in lines if line.startswith("job ")]
    assert sorted(line.split(" done")[0] for line in progress) == [f"job {k}/4" for k in range(1, 5)]
    assert all("status=completed test pixel_error=" in line for line in progress)
    threads = max(os.cpu_count() // 2, 1)  # 2 jobs at once share the cores
    assert all(line.endswith(f"threads={threads} -> {line.split(' -> ')[1]}") for line in progress)
    assert lines[-1].startswith("sweep done: 4 jobs: 4 completed")


def test_tensorboard_sees_one_run_per_job_with_its_hparams(joblib_sweep):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    sweep_dir, _ = joblib_sweep
    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir))
    runs.Reload()
    jobs = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    assert sorted(runs.Runs()) == jobs
    seen = set()
    for run in jobs:
        tags = runs.PluginRunToTagToContent(metadata.PLUGIN_NAME)[run]
        assert {metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG} <= set(tags)
        hparams = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG]).hparams
        seen.add((hparams["split.name"].string_value, hparams["seed"].number_value))
        assert "test/pixel_error" in runs.GetAccumulator(run).Tags()["scalars"]
    assert len(seen) == 4  # the HParams dashboard tells the jobs apart


def test_a_failing_job_is_recorded_and_the_others_complete(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # the config check refuses Nesterov without momentum in that job alone: one job of four fails
    result = multirun(tmp_path, *TINY, "optimizer=sgd", "optimizer.nesterov=false,true", "optimizer.momentum=0,0.9",
                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 1
    assert "1 of 4 jobs did not complete (1 failed)" in result.stderr
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "completed"]
    assert "optimizer.nesterov=true optimizer.momentum=0" in rows[2]["overrides"].lower()
    assert "Nesterov" in rows[2]["error"]
    assert "Nesterov" in (tmp_path / rows[2]["job"] / "train.log").read_text()  # with its traceback
    assert "status=failed error=ConfigError" in (tmp_path / "sweep.log").read_text()


def test_a_job_with_a_bad_config_fails_alone(tmp_path):
    # basic launcher, one job after the other: the bad first job does not stop the second
    result = multirun(tmp_path, *TINY, "trainer.batch_size=99999,8")
    assert result.returncode == 1
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert "ConfigError" in rows[0]["error"] and "trainer.batch_size" in rows[0]["error"]


def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = multirun(tmp_path, *TINY, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in summary_rows(tmp_path)] == ["completed", "completed"]
    progress = [line for line in (tmp_path / "sweep.log").read_text().splitlines() if line.startswith("job ")]
    assert len(progress) == 2 and all(" threads=1 " in line for line in progress)


@pytest.mark.slow
def test_the_issue_command_four_jobs_on_joblib(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = multirun(tmp_path, "task=classification", "split=uniform,quarter", "model=conv,coordconv",
                      "hydra/launcher=joblib", "debug=fast", timeout=600)
    assert result.returncode == 0, result.stderr
    rows = summary_rows(tmp_path)
    assert sorted((r["split"], r["model"]) for r in rows) == sorted(
        (s, m) for s in ("uniform", "quarter") for m in ("conv", "coordconv"))
    assert {r["status"] for r in rows} == {"completed"} and all(r["test_accuracy"] for r in rows)
