"""`python -m coordexp.reproduce`: the verdicts, the plan, and the plumbing on runs shrunk to a few steps."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from coordexp import claims
from coordexp.reproduce import (BUDGETS, SETTINGS_DIR, Group, best, check_settings, curves_figure, first_reaching,
                                memorise_figure, paper_figure, paper_settings, plan, products, split_sizes,
                                run_overrides, setting_axes, verdict, what_it_did)
from coordexp.compose import compose_config
from coordexp.tasks import TASK_CLASSES


def test_reproduce_launches_through_hydra_writes_a_report_and_trains_nothing_twice(tmp_path):
    args = [sys.executable, "-m", "coordexp.reproduce", "--smoke", "--tasks", "regression", "--splits", "quarter",
            "--seeds", "0", "--extras", "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    report = (tmp_path / "REPORT.md").read_text()
    assert "| regression | quarter | struggles, worst on quarter |" in report
    assert "Total wall time" in report and "## The CoordConv regressor" in report
    assert "![regression curves](curves-regression.png)" in report
    for figure in ("REPORT.png", "curves-regression.png"):
        assert (tmp_path / figure).stat().st_size > 0
    # phase 1: the memorising baseline; phase 2: coordconv and its one-hot-1 variant, mlp, coordmlp; each
    # phase's multirun in its own sweep directory
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.json"))
    assert len(runs) == 1 + 4, runs
    assert {r.split("/")[0].split("-")[0] for r in runs} == {"phase1", "phase2"}
    assert any(r.endswith("/regression_coordconv_onehot1/quarter/seed0") for r in runs), runs
    job = next(tmp_path.glob("phase2-*/regression_coordconv/quarter/seed0"))
    hydra = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra
    assert hydra.mode == "MULTIRUN" and "joblib" in hydra.launcher._target_  # Hydra's launcher ran it
    assert json.loads((job / "metrics.json").read_text())["history"]["epochs"] == [1]
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")}
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")} == written  # nothing trained again
    # each phase's sweeps were checked, then continued: CoordConv's in one of its own, stopped at its result; the
    # one-hot-1 setting by name; MLP and CoordMLP by their pairs
    logs = {p.parent.name: p.read_text() for p in tmp_path.glob("phase2-*/sweep.log")}
    assert sorted(int(log.split("sweep started: ")[1].split()[0]) for log in logs.values()) == [1, 1, 2], logs
    assert all("sweep continued:" in log for log in logs.values()), logs
    assert "trainer.target=0.5" in (job / ".hydra" / "overrides.yaml").read_text()
    assert (tmp_path / "REPORT.md").read_text().split("## The paper's")[1] == report.split("## The paper's")[1]


def test_dry_run_prints_one_multirun_per_product_on_the_chosen_launcher(tmp_path):
    out = subprocess.run([sys.executable, "-m", "coordexp.reproduce", "--dry-run", "--launcher", "slurm",
                          "--tasks", "classification", "--seeds", "0", "1", "--extras", "--out", str(tmp_path),
                          "hydra.launcher.partition=cpu"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if line.startswith("python -m coordexp.train -m")]
    assert all("hydra/launcher=slurm" in c and "hydra.launcher.partition=cpu" in c for c in commands), commands
    # one multirun per split (the uniform one on the authors' draw): the memorising baselines (a named setting),
    # CoordConv (the pair's CPU setting), the extras (asked) on seed 0
    axes = [[w for w in c.split() if w.startswith(("setting=", "task=", "model=", "split=", "seed=", "data."))]
            for c in commands]
    assert axes == [
        ["setting=classification_conv_memorise", "split=uniform", "seed=0,1", "data.uniform_split=authors"],
        ["setting=classification_conv_memorise", "split=quarter", "seed=0,1"],
        ["task=classification", "model=coordconv", "split=uniform", "seed=0,1", "data.uniform_split=authors"],
        ["task=classification", "model=coordconv", "split=quarter", "seed=0,1"],
        ["task=classification", "model=mlp,coordmlp", "split=uniform", "seed=0", "data.uniform_split=authors"],
        ["task=classification", "model=mlp,coordmlp", "split=quarter", "seed=0"]]
    # CoordConv's runs stop at the paper's result on test; the baselines' settings stop themselves (on train)
    assert ["trainer.target=1.0" in c for c in commands] == [False, False, True, True, False, False], commands
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_bad_override_is_one_line_and_exit_2_before_anything_is_written(tmp_path):
    out = subprocess.run([sys.executable, "-m", "coordexp.reproduce", "--out", str(tmp_path / "out"),
                          "trainer.epochs=0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == ("coordexp.reproduce: error: trainer.epochs=0 is invalid: must be an integer in "
                          "[1, 1000000000]\n")
    assert not (tmp_path / "out").exists()


def test_full_runs_the_paper_grids_on_the_chosen_launcher():
    out = subprocess.run([sys.executable, "-m", "coordexp.reproduce", "--full", "--dry-run", "--launcher", "slurm"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "setting=classification_conv_paper multirun=classification_conv_grid " in out.stdout
    assert "setting=rendering_conv_paper multirun=rendering_conv_grid " in out.stdout
    assert out.stdout.count("hydra/launcher=slurm") == 6


def test_products_keep_the_order_and_split_what_is_not_a_product():
    jobs = [("a", "uniform", 0), ("a", "quarter", 0), ("b", "uniform", 0), ("b", "quarter", 0),
            ("c", "uniform", 1), ("c", "uniform", 2), ("c", "quarter", 2)]
    assert products(jobs) == [(["a", "b"], ["uniform", "quarter"], [0]), (["c"], ["uniform"], [1, 2]),
                              (["c"], ["quarter"], [2])]


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_every_planned_setting_composes_to_its_task_and_model(budget):
    groups, sweeps = plan(["classification", "regression", "rendering"], ["uniform", "quarter"], budget, True)
    assert check_settings(groups, sweeps) is None
    planned = [*groups, *[p for ps in sweeps.values() for p in ps],
               *[g for g, _ in paper_settings(["classification", "regression", "rendering"], ["uniform", "quarter"],
                                               budget)]]
    for g in planned:
        [(_, axes)] = setting_axes([g.setting])  # how its multirun picks it
        cfg = compose_config(*axes, f"split={g.split}")  # composed and checked
        assert (cfg.task.name, cfg.split.name, cfg.model.name) == (g.task, g.split, g.model), g.setting
    assert {p.stem for p in SETTINGS_DIR.glob("*.yaml")} >= {g.setting for g in planned}


def test_setting_axes_sweep_named_settings_by_name_and_cpu_settings_by_their_pair():
    named = ["classification_conv_memorise", "regression_conv_memorise"]
    assert setting_axes(named) == [(named, ["setting=classification_conv_memorise,regression_conv_memorise"])]
    assert setting_axes(["classification_coordconv", "regression_coordconv", "regression_coordconv_onehot1",
                         "classification_mlp", "regression_mlp"]) == [
        (["regression_coordconv_onehot1"], ["setting=regression_coordconv_onehot1"]),
        (["classification_coordconv", "classification_mlp", "regression_coordconv", "regression_mlp"],
         ["task=classification,regression", "model=coordconv,mlp"])]
    assert setting_axes(["classification_mlp", "regression_coordmlp"]) == [
        (["classification_mlp"], ["task=classification", "model=mlp"]),
        (["regression_coordmlp"], ["task=regression", "model=coordmlp"])]


def group(task, split, model, train, test, variant=""):
    """A Group whose runs completed with these per-seed train and test headline values."""
    g = Group(task, split, model, variant)
    g.runs = [{"status": "completed", f"train_{g.headline}": a, f"test_{g.headline}": b} for a, b in zip(train, test)]
    return g


@pytest.mark.parametrize("task, split, conv, coord, holds", [
    ("classification", "quarter", ([0.99], [0.0]), ([1.0] * 3, [1.0] * 3), True),
    ("classification", "quarter", ([0.44], [0.0]), ([1.0] * 3, [1.0] * 3), False),  # underfit: test ~0 proves nothing
    ("classification", "quarter", ([0.99], [0.0]), ([1.0] * 3, [1.0, 1.0, 0.95]), False),  # every seed must hold
    ("classification", "uniform", ([0.99], [0.88]), ([1.0] * 3, [1.0] * 3), False),  # test above the paper's 86%
    ("classification", "uniform", ([0.97], [0.5]), ([1.0] * 3, [1.0] * 3), True),
    ("rendering", "quarter", ([0.95], [0.2]), ([1.0] * 3, [0.995] * 3), True),
    ("rendering", "quarter", ([0.79], [0.2]), ([1.0] * 3, [0.995] * 3), False),  # underfit: train IoU < 0.9
    ("rendering", "quarter", ([0.95], [0.4]), ([1.0] * 3, [0.995] * 3), False),  # deconv above the paper's 0.36
    ("regression", "quarter", ([1.4], [8.4]), ([0.0] * 3, [0.01] * 3), True),
    ("regression", "quarter", ([1.4], [2.0]), ([0.0] * 3, [0.01] * 3), False),  # train not well below test
    ("regression", "uniform", ([0.1], [0.3]), ([0.0] * 3, [0.01] * 3), False),  # conv sub-pixel: no struggle
    ("regression", "uniform", ([0.5], [2.0]), ([0.0] * 3, [0.01] * 3), True),
    ("regression", "uniform", ([0.5], [2.0]), ([0.0] * 3, [0.01, 0.01, 0.7]), False),
])
def test_verdict_asks_the_whole_claim(task, split, conv, coord, holds):
    ok, why = verdict(task, split, group(task, split, "conv", *conv), group(task, split, "coordconv", *coord))
    assert ok is holds, why
    assert f"train {conv[0][0]:.3g}" in why and f"test {conv[1][0]:.3g}" in why  # names train and test


def test_an_underfit_baseline_is_contradicted_and_the_verdict_says_why():
    ok, why = verdict("classification", "quarter", group("classification", "quarter", "conv", [0.44], [0.0]),
                      group("classification", "quarter", "coordconv", [1.0], [1.0]))
    assert not ok and why.startswith("the baseline did not fit its training set: train 0.44 >= 0.95 is false")


def test_best_of_sweep_is_chosen_on_train_in_the_tasks_direction():
    fits, generalises = (group("classification", "quarter", "conv", [0.99], [0.0], "a"),
                         group("classification", "quarter", "conv", [0.6], [0.1], "b"))
    assert best([generalises, fits]) is fits
    low, high = (group("regression", "quarter", "conv", [0.5], [9.0], "a"),
                 group("regression", "quarter", "conv", [1.5], [6.0], "b"))
    assert best([high, low]) is low


def test_the_extras_run_only_when_asked():
    default, _ = plan(["classification"], ["quarter"], "cpu")
    asked, _ = plan(["classification"], ["quarter"], "cpu", extras=True)
    assert {g.model for g in asked} - {g.model for g in default} == {"mlp", "coordmlp"}


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_baselines_memorise_until_train_099_and_never_stop_on_test(budget):
    _, sweeps = plan(["classification", "regression", "rendering"], ["quarter"], budget)
    for (task, _), points in sweeps.items():
        for point in points:
            assert run_overrides(point) == (), point.setting  # the setting says when it stops
            cfg = compose_config(f"setting={point.setting}", "split=quarter")
            target = None if task == "regression" else 0.99  # the regressors' fit is relative: whole length
            assert (cfg.trainer.target, cfg.trainer.target_part) == (target, "held_out" if target is None else "train")


@pytest.mark.parametrize("task", ["classification", "regression", "rendering"])
def test_the_memorising_baseline_is_its_cpu_setting_over_three_times_its_epochs(task):
    recipe = compose_config(f"task={task}", "model=conv", "split=uniform", "data.uniform_split=authors")
    point = compose_config(f"setting={task}_conv_memorise", "split=uniform", "data.uniform_split=authors")
    assert point.trainer.epochs == 3 * recipe.trainer.epochs
    assert point.model.padding == "tf" and point.data.uniform_split == "authors"
    for key in ("epochs", "target", "target_part"):
        recipe.trainer[key] = point.trainer[key]
    assert point == recipe  # nothing else differs


def test_the_paper_budget_runs_the_papers_coordconv_setting_and_the_deconv_at_its_length():
    assert paper_settings(["classification"], ["uniform", "quarter"], "cpu") == []
    jobs = paper_settings(["classification", "rendering"], ["uniform", "quarter"], "paper")
    assert sorted({(g.setting, g.split, seed) for g, seed in jobs}) == sorted(
        [("classification_coordconv_paper", s, k) for s in ("uniform", "quarter") for k in range(5)]
        + [("classification_conv_paper", "uniform", 0)])
    assert paper_settings(["regression"], ["uniform"], "paper") == []
    coord_group, deconv_group = (next(g for g, _ in jobs if g.model == m) for m in ("coordconv", "conv"))
    assert run_overrides(coord_group) == ("trainer.target=1.0",)  # the paper's setting, stopped at 100% test
    assert run_overrides(deconv_group) == ("trainer.eval_every=10",)  # its curve drawn when cut short
    deconv = compose_config("setting=classification_conv_paper", "split=uniform", *run_overrides(deconv_group))
    assert (deconv.trainer.epochs, deconv.model.mul, deconv.model.fs, deconv.data.uniform_split) == (1000, 2, 3, "authors")


def test_the_report_names_the_authors_uniform_split():
    assert split_sizes("uniform") == (2368, 768) and split_sizes("quarter") == (2407, 729)


def run_with_history(seed, values, headline="accuracy"):
    return {"status": "completed", "seed": seed, "history": {"epochs": [5 * (i + 1) for i in range(len(values))],
            "metrics": [{"train": {headline: a}, "test": {headline: b}} for a, b in values]}}


def test_first_reaching_reads_test_in_the_tasks_direction():
    task = TASK_CLASSES["classification"]
    assert first_reaching(run_with_history(0, [(0.5, 0.9), (1.0, 1.0), (1.0, 1.0)]), "accuracy", task) == 10
    assert first_reaching(run_with_history(0, [(1.0, 0.99)]), "accuracy", task) is None
    regression = TASK_CLASSES["regression"]
    assert first_reaching(run_with_history(0, [(0.1, 0.6), (0.1, 0.4)], "pixel_error"), "pixel_error",
                          regression) == 10


def test_memorise_figure_plots_test_against_train_per_seed_with_the_papers_bound():
    g = Group("classification", "uniform", "conv", "memorise")
    g.runs = [run_with_history(seed, [(0.5, 0.4), (0.99, 0.8)]) for seed in range(3)]
    fig = memorise_figure({("classification", "uniform"): g})
    (ax,) = fig.axes
    seeds = [line for line in ax.get_lines() if line.get_label().startswith("seed")]
    assert len(seeds) == 3 and list(seeds[0].get_xdata()) == [0.5, 0.99] and list(seeds[0].get_ydata()) == [0.4, 0.8]
    bound = next(line for line in ax.get_lines() if line.get_label().startswith("paper's bound"))
    assert list(bound.get_ydata()) == [claims.row("classification", "uniform").fails] * 2


def test_paper_figure_has_a_panel_per_setting_and_draws_runs_cut_short():
    g = Group("classification", "uniform", "conv", "paper")
    g.runs = [{**run_with_history(0, [(0.1, 0.1), (0.2, 0.15)]), "status": "interrupted"}]
    fig = paper_figure([g])
    assert [ax.get_title() for ax in fig.axes] == ["classification_conv_paper / uniform"]
    assert len(fig.axes[0].get_lines()) == 2  # its train and test, where it got


def test_every_run_table_says_how_each_run_ended():
    row = {"status": "completed", "epochs": 45, "headline": "accuracy", "train_accuracy": 0.96,
           "precision": "bf16",  # what trainer.precision (auto) resolved to, from metrics.json
           "trainer": {"epochs": 50, "target": 0.95, "target_part": "train", "precision": "auto"}}
    assert what_it_did(row, TASK_CLASSES["classification"]) == ("fit its training set (train accuracy >= 0.95) after 45 of 50 "
                                                  "epochs, bf16")
    whole = {**row, "epochs": 50, "train_accuracy": 0.9}
    assert what_it_did(whole, TASK_CLASSES["classification"]) == "its whole length (50 epochs, bf16)"
    solved = {"status": "completed", "epochs": 2, "headline": "pixel_error", "test_pixel_error": 0.1,
              "precision": "fp32", "trainer": {"epochs": 6, "target": 0.5, "target_part": "held_out", "precision": "fp32"}}
    assert what_it_did(solved, TASK_CLASSES["regression"]) == ("reached the result (test pixel_error < 0.5) after 2 of 6 "
                                                         "epochs, fp32")
    assert what_it_did({**solved, "status": "interrupted"}, TASK_CLASSES["regression"]) == "interrupted"
    with_valid = {**solved, "valid_pixel_error": 0.4, "test_pixel_error": 0.7}  # held out: valid where there is one
    assert what_it_did(with_valid, TASK_CLASSES["regression"]).startswith("reached the result (valid pixel_error")


def test_the_papers_renderer_runs_only_when_asked():
    default, _ = plan(["rendering"], ["quarter"], "cpu")
    asked, _ = plan(["rendering"], ["quarter"], "cpu", renderer_softmax=True)
    assert {g.setting for g in asked} - {g.setting for g in default} == {"rendering_coordconv_softmax"}


def test_curves_show_train_and_test_of_both_models_per_split():
    groups = []
    for model, values in (("conv", [0.5, 0.99]), ("coordconv", [1.0, 1.0])):
        for split in ("uniform", "quarter"):
            g = Group("classification", split, model)
            g.runs = [{"status": "completed", "history": {"epochs": [1, 2], "metrics": [
                {part: {"accuracy": v - 0.01 * seed} for part in ("train", "test")} for v in values]}}
                for seed in range(3)]
            groups.append(g)
    fig = curves_figure("classification", groups)
    assert [ax.get_title() for ax in fig.axes] == ["classification / uniform", "classification / quarter"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [4, 4]  # baseline and CoordConv, train and test
    mean = next(line for line in fig.axes[0].get_lines() if line.get_label().startswith("conv train"))
    assert list(mean.get_ydata()) == pytest.approx([0.49, 0.98])  # the mean over seeds


@pytest.mark.parametrize("flag, value, words", [
    ("--seeds", "-1", "--seeds -1 is invalid: a seed is an integer in [0, 4294967295]"),
    ("--seeds", "99999999999999999999", "--seeds 99999999999999999999 is invalid: a seed is an integer in [0, 4294967295]"),
    ("--workers", "0", "--workers=0 is invalid: must be an integer in [1, 1024]"),
])
def test_reproduce_refuses_a_number_it_cannot_honour_before_any_work(tmp_path, flag, value, words):
    out = subprocess.run([sys.executable, "-m", "coordexp.reproduce", flag, value, "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.splitlines()[-1].endswith(words), out.stderr
    assert not (tmp_path / "out").exists()


def test_a_job_that_did_not_complete_makes_the_reproduction_exit_1_and_the_same_command_completes_it(tmp_path):
    args = [sys.executable, "-m", "coordexp.reproduce", "--smoke", "--tasks", "regression", "--splits", "quarter",
            "--seeds", "0", "--out", str(tmp_path / "out")]
    dry = subprocess.run(args + ["--dry-run"], capture_output=True, text=True, timeout=120)
    sweep = next(w.split("=", 1)[1] for w in dry.stdout.split() if w.startswith("hydra.sweep.dir="))
    job = Path(sweep) / "regression_conv_memorise" / "quarter" / "seed0"
    job.mkdir(parents=True)
    (job / "metrics.json").write_text("{}")  # a run the job cannot identify: its directory is refused
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr
    assert "1 of 3 runs did not complete" in first.stderr.splitlines()[-1]
    assert "## Runs that did not complete" in (tmp_path / "out" / "REPORT.md").read_text()
    (job / "metrics.json").unlink()
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "## Runs that did not complete" not in (tmp_path / "out" / "REPORT.md").read_text()
