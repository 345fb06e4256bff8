"""Sweeps: the paper's grids compose with the sizes they claim and every job passes the check before any
work; a bad value refuses the whole sweep; a multirun writes one summary row per job, survives a failing job
and says so in its exit status; SIGINT/SIGTERM stop it and rerunning it continues it; one sweep per sweep
directory; the launchers; TensorBoard sees one run per job; aggregation survives damaged files."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hydra.types import RunMode
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coordexp.aggregate import aggregate
from coordexp.config import check
from coordexp.rundir import CHECKPOINT, load_checkpoint
from coordexp.sweep import check_sweep, planned_jobs
from coordexp.compose import CONFIG_DIR
from conftest import make_cfg

REPO = Path(__file__).resolve().parent.parent
GRIDS = sorted(p.stem for p in (Path(CONFIG_DIR) / "multirun").glob("*_grid*.yaml"))
PAPER_SETTINGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "setting").glob("*_paper.yaml"))
TINY = ["task=regression", "model=coordconv", "data.canvas=32", "debug=fast", "trainer.plots=false"]  # ~1 s a job


def compose_with_hydra(*overrides: str):
    """The config with its hydra node, as `python -m coordexp.train -m OVERRIDES` sees it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def multirun(sweep_dir: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordexp.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start_multirun(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coordexp.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrapped_multirun(sweep_dir: Path, patch: str, *overrides: str) -> subprocess.CompletedProcess:
    """The sweep's CLI in a process where `patch` (Python source) ran first: to make a job fail or a signal come."""
    script = (f"import os, runpy, signal, sys\nimport coordexp.run\n{patch}\nsys.argv = ['coordexp.train', '-m', "
              f"*{[*overrides, f'hydra.sweep.dir={sweep_dir}']!r}]\nrunpy.run_module(\"coordexp.train\", run_name=\"__main__\")\n")
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def summary_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


# --- the paper's grids and settings ---------------------------------------------------------------------

@pytest.mark.parametrize("name", GRIDS)
def test_a_grid_composes_on_its_pairs_settings_with_the_size_it_claims_and_every_job_passes_the_check(name):
    claimed = int(re.search(r"(\d+) runs per split", (Path(CONFIG_DIR) / "multirun" / f"{name}.yaml").read_text())[1])
    pair = "_".join(name.split("_")[:2])
    for setting in (pair, f"{pair}_paper"):  # the pair's CPU setting and the paper's, the grid's own
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):  # the check composes, as in the app
            cfg = compose("config", overrides=[f"setting={setting}", f"multirun={name}"], return_hydra_config=True)
        assert cfg.hydra.mode == RunMode.MULTIRUN  # no -m needed
        assert planned_jobs(cfg) == claimed
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            assert check_sweep(cfg) == claimed  # every job's config is valid


def test_the_paper_deconv_grids_have_the_paper_sizes_and_l2_as_twice_the_weight_decay():
    assert planned_jobs(compose_with_hydra("multirun=classification_conv_grid")) == 324
    assert planned_jobs(compose_with_hydra("multirun=rendering_conv_grid")) == 648
    params = compose_with_hydra("multirun=classification_conv_grid").hydra.sweeper.params
    assert [float(v) for v in params["optimizer.weight_decay"].split(",")] == [2 * l2 for l2 in (0, 1e-3, 1e-2)]


@pytest.mark.parametrize("name", PAPER_SETTINGS)
def test_a_paper_setting_pins_its_task_and_model_and_replaces_the_cpu_setting(name):
    task, model, _ = name.split("_")
    for split in ("uniform", "quarter"):
        cfg = make_cfg(f"setting={name}", f"split={split}")
        check(cfg)
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


def test_aggregate_marks_a_damaged_or_partial_metrics_json_unreadable_and_still_writes_the_summary(tmp_path):
    fake_run(tmp_path / "0_ok", completed("coordconv", 1.0, 1.0))
    damaged = {"1_truncated": json.dumps(completed("conv", 1.0, 0.0))[:60],  # a disk that filled up
               "2_no_status": json.dumps({"task": "classification", "train": {"accuracy": 1.0}}),
               "3_not_an_object": "[1, 2]",
               "4_not_utf8": "\udcff"}
    for job, text in damaged.items():
        fake_run(tmp_path / job, None)
        (tmp_path / job / "metrics.json").write_bytes(text.encode(errors="surrogateescape"))
    fake_run(tmp_path / "5_damaged_hydra", completed("conv", 0.5, 0.0))
    (tmp_path / "5_damaged_hydra" / ".hydra" / "config.yaml").write_text("task: [")
    result = subprocess.run([sys.executable, "-m", "coordexp.aggregate", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "6 jobs: 2 completed, 4 unreadable" in result.stdout
    rows = {r["job"]: r for r in summary_rows(tmp_path)}
    assert [rows[job]["status"] for job in damaged] == ["unreadable"] * 4
    assert "JSONDecodeError" in rows["1_truncated"]["error"] and "has no status" in rows["2_no_status"]["error"]
    assert "JSON list" in rows["3_not_an_object"]["error"] and "UnicodeDecodeError" in rows["4_not_utf8"]["error"]
    assert rows["5_damaged_hydra"]["status"] == "completed" and rows["5_damaged_hydra"]["model"] == "conv"
    assert "4 unreadable" in (tmp_path / "summary.md").read_text() and (tmp_path / "summary.png").exists()


def test_coordexp_uses_only_hydras_public_api():
    for path in (REPO / "coordexp").glob("*.py"):
        text = path.read_text()
        assert "hydra._internal" not in text and "_return_value" not in text, path


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


def test_failing_and_diverging_jobs_are_recorded_and_the_others_complete(tmp_path):
    # seed 1's jobs raise while building (injected); lr=1e300 diverges: four outcomes, the sweep goes on
    patch = """
real = coordexp.run.build_run
def build_run(cfg, device):
    if cfg.seed == 1:
        raise RuntimeError("injected failure")
    return real(cfg, device)
coordexp.run.build_run = build_run
"""
    result = wrapped_multirun(tmp_path, patch, *TINY, "seed=0,1", "optimizer.lr=0.001,1e300")
    assert result.returncode == 1, result.stderr
    assert "3 of 4 jobs did not complete (1 diverged, 2 failed)" in result.stderr
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["completed", "diverged", "failed", "failed"]
    assert "non-finite" in rows[1]["error"] and "injected failure" in rows[2]["error"]
    log = (tmp_path / rows[2]["job"] / "train.log").read_text()
    assert "Traceback" in log and "injected failure" in log  # with its traceback
    assert "status=failed error=RuntimeError('injected failure')" in (tmp_path / "sweep.log").read_text()


BAD_SWEEPS = [  # (id, overrides, texts of the one line it must print)
    ("unknown group choice", ["model=coordconv,foo"],
     ["model='foo' is invalid: valid choices: conv, coordconv, coordmlp, mlp", "sweep job 2 of 2"]),
    ("value out of range", ["optimizer.lr=0.01,-1"], ["optimizer.lr=-1", "(0, inf]", "sweep job 2 of 2"]),
    ("value of the wrong type", ["trainer.epochs=1,abc"], ["trainer.epochs='abc'", "integer in [1, 1000000000]"]),
    ("bad combination", ["optimizer=sgd", "optimizer.nesterov=false,true", "optimizer.momentum=0,0.9"],
     ["optimizer.nesterov", "> 0", "sweep job 3 of 4"]),
    ("larger than the training set", ["trainer.batch_size=99999,8"], ["trainer.batch_size=99999"]),
    ("unknown key", ["trainer.epoch=1,2"], ["trainer.epoch=1 is invalid"]),
    ("resume in a sweep", ["resume=a,b"], ["resume='a' is invalid with -m"]),
]


@pytest.fixture(scope="module")
def bad_sweeps(tmp_path_factory):
    """Every bad sweep through the real CLI, a few at a time: {id: (sweep dir, result)}."""
    dirs = {case_id: tmp_path_factory.mktemp("bad") / "sweep" for case_id, _, _ in BAD_SWEEPS}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case_id: pool.submit(multirun, dirs[case_id], *TINY, *overrides)
                   for case_id, overrides, _ in BAD_SWEEPS}
    return {case_id: (dirs[case_id], future.result()) for case_id, future in futures.items()}


@pytest.mark.parametrize("case_id, overrides, texts", BAD_SWEEPS, ids=[c[0] for c in BAD_SWEEPS])
def test_a_bad_value_refuses_the_whole_sweep_before_any_work(bad_sweeps, case_id, overrides, texts):
    sweep_dir, result = bad_sweeps[case_id]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coordexp: error:") and "nothing was run" in lines[0], lines
    for text in texts:
        assert text in lines[0]
    assert not sweep_dir.exists()  # nothing written


# --- stopping a sweep, continuing it, one sweep per directory -------------------------------------------

STOPPABLE = [*TINY, "data.canvas=16", "data.square=5", "trainer.epochs=3", "trainer.max_steps_per_epoch=60",
             "seed=0,1,2"]  # 3 jobs; each has two epochs left after its first checkpoint


def final_state(job_dir: Path) -> tuple:
    metrics = json.loads((job_dir / "metrics.json").read_text())
    weights = load_checkpoint(job_dir / CHECKPOINT)["model"]
    return ({k: metrics[k] for k in ("status", "epochs", "step", "train", "test")},
            {k: v.tolist() for k, v in weights.items()})


def test_sigint_stops_a_sweep_and_rerunning_it_completes_it_identically(tmp_path):
    reference = start_multirun(tmp_path / "reference", *STOPPABLE)
    sweep = start_multirun(tmp_path / "sweep", *STOPPABLE)
    deadline = time.time() + 240
    while not list((tmp_path / "sweep").glob(f"*/{CHECKPOINT}")):
        assert time.time() < deadline
        time.sleep(0.05)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err
    assert "sweep stopped by SIGINT" in err and f"hydra.sweep.dir={tmp_path / 'sweep'}" in err
    statuses = [r["status"] for r in summary_rows(tmp_path / "sweep")]
    # the running job checkpointed and is recorded interrupted; no job started after the signal
    assert statuses[-1] == "interrupted" and set(statuses[:-1]) <= {"completed"}, statuses
    assert len(job_dirs(tmp_path / "sweep")) == len(statuses)
    assert (tmp_path / "sweep" / "sweep.log").read_text().splitlines()[-1].startswith("sweep stopped: ")
    again = multirun(tmp_path / "sweep", *STOPPABLE)
    assert again.returncode == 0, again.stderr
    assert reference.wait(timeout=300) == 0
    assert [d.name for d in job_dirs(tmp_path / "sweep")] == [d.name for d in job_dirs(tmp_path / "reference")]
    for job, expected in zip(job_dirs(tmp_path / "sweep"), job_dirs(tmp_path / "reference")):
        assert final_state(job) == final_state(expected)
    log = (tmp_path / "sweep" / "sweep.log").read_text().splitlines()
    assert log[log.index("sweep continued: 3 jobs planned") + 1].startswith("job 1/3 done: ")


def test_a_signal_between_jobs_is_not_lost(tmp_path):
    # SIGTERM arrives after job 0 trained, before the next job: job 0 is completed, no other job starts
    patch = """
real = coordexp.run.train
def train(cfg, *args, **kwargs):
    metrics = real(cfg, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return metrics
coordexp.run.train = train
"""
    result = wrapped_multirun(tmp_path, patch, *TINY, "seed=0,1,2")
    assert result.returncode == 143, result.stderr
    assert [r["status"] for r in summary_rows(tmp_path)] == ["completed"]
    assert len(job_dirs(tmp_path)) == 1


def test_sigint_to_a_joblib_sweep_stops_its_workers_jobs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    # workers look at the stop file once a second: at canvas 32 (~0.5 s an epoch) each job has ~10 s left after
    # its first checkpoint (at canvas 16, 30 epochs took well under a second: jobs completed before a look)
    longer = [{"trainer.epochs=3": "trainer.epochs=20"}.get(arg, arg) for arg in STOPPABLE[:-1]
              if arg != "data.canvas=16"]
    args = [*longer, "seed=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    sweep = start_multirun(tmp_path, *args)
    deadline = time.time() + 240
    while not list(tmp_path.glob(f"*/{CHECKPOINT}")):
        assert time.time() < deadline
        time.sleep(0.05)
    sweep.send_signal(signal.SIGINT)  # to the sweep's process only: its workers learn it from the sweep directory
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err
    statuses = [r["status"] for r in summary_rows(tmp_path)]
    assert "interrupted" in statuses and set(statuses) <= {"completed", "interrupted"} and len(statuses) < 4
    again = multirun(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in summary_rows(tmp_path)] == ["completed"] * 4


def test_rerunning_a_completed_sweep_trains_nothing(joblib_sweep, tmp_path):
    sweep_dir, _ = joblib_sweep
    shutil.copytree(sweep_dir, tmp_path / "sweep")
    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob(f"*/{CHECKPOINT}")}
    result = multirun(tmp_path / "sweep", *TINY, "split=uniform,quarter", "seed=0,1")  # basic launcher this time
    assert result.returncode == 0, result.stderr
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints and len(checkpoints) == 4
    assert (result.stdout + result.stderr).count("already holds this run, completed: not run again") == 4
    assert (tmp_path / "sweep" / "sweep.log").read_text().splitlines()[-6] == "sweep continued: 4 jobs planned"


def test_a_used_sweep_directory_refuses_another_sweep_and_a_held_one_any(joblib_sweep, tmp_path):
    sweep_dir, _ = joblib_sweep
    before = sorted((p, p.stat().st_mtime_ns) for p in sweep_dir.rglob("*") if p.is_file())
    result = multirun(sweep_dir, *TINY, "seed=5,6")
    assert result.returncode == 2 and "holds another sweep" in result.stderr and str(sweep_dir) in result.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in sweep_dir.rglob("*") if p.is_file()) == before
    # two sweeps at once into one directory: the second is refused, whether the first still runs or has ended
    first = start_multirun(tmp_path, *TINY, "seed=0,1")
    second = start_multirun(tmp_path, *TINY, "seed=2,3")
    codes = sorted([first.wait(timeout=300), second.wait(timeout=300)])
    assert codes == [0, 2]
    assert len(summary_rows(tmp_path)) == 2
    progress = [line for line in (tmp_path / "sweep.log").read_text().splitlines() if line.startswith("job ")]
    assert sorted(line.split(" done")[0] for line in progress) == ["job 1/2", "job 2/2"]


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
