"""python -m coordexp.evaluate: finished runs evaluated on other canvases, and the models that cannot be."""
import csv
import json

import pytest

from coordexp import evaluate as ev
from coordexp.run import train
from conftest import make_cfg

SMALL = ("debug=fast", "data.canvas=32", "data.square=5", "trainer.plots=false")


def trained(root, name, *overrides):
    run_dir = root / name
    train(make_cfg("task=regression", *SMALL, *overrides), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "sweep"
    for seed in (0, 1):
        trained(sweep, f"{seed}_coordconv", "model=coordconv", f"seed={seed}")
    return {"sweep": sweep, "mlp": trained(root, "mlp", "model=mlp", "model.hidden=8"),
            "dense": trained(root, "dense", "model=conv", "split=uniform")}


def outputs(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(("canvases", ".canvases")))


def test_a_coordconv_regressor_is_evaluated_on_other_canvases(runs, capsys):
    sweep = runs["sweep"]
    assert ev.main([str(sweep), "--canvases", "16", "32", "48"]) == 0
    assert outputs(sweep) == ["canvases.csv", "canvases.md", "canvases.png"]  # and no temporary file left
    rows = list(csv.DictReader((sweep / "canvases.csv").open()))
    assert [(row["run"], row["canvas"]) for row in rows] == [
        (f"{seed}_coordconv", str(canvas)) for seed in (0, 1) for canvas in (16, 32, 48)]
    for seed in (0, 1):  # on its own canvas the run's own test error comes back
        own = json.loads((sweep / f"{seed}_coordconv" / "metrics.json").read_text())["test"]["pixel_error"]
        row = next(r for r in rows if r["run"] == f"{seed}_coordconv" and r["canvas"] == "32")
        assert float(row["test_pixel_error"]) == pytest.approx(own, rel=1e-5)
        assert row["trained_canvas"] == "32"
    errors = {row["canvas"]: float(row["test_pixel_error"]) for row in rows if row["run"] == "0_coordconv"}
    assert len(set(errors.values())) == 3  # other canvases are other data
    table = (sweep / "canvases.md").read_text()
    assert "| model | runs | 16 | 32 | 48 |" in table and "| coordconv | 2 | " in table and " ± " in table
    assert "2 runs x 3 canvases" in capsys.readouterr().out


@pytest.mark.parametrize("name, model, why", [
    ("mlp", "mlp", "net.0.weight is [8, 1024] at canvas 32, [8, 256] at 16"),
    ("dense", "conv", "net.12.weight is [64, 256] at canvas 32, [64, 64] at 16"),  # the uniform split's Dense(64)
])
def test_a_model_whose_shapes_depend_on_the_canvas_is_one_line_and_exit_2(runs, capsys, name, model, why):
    assert ev.main([str(runs[name]), "--canvases", "16", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"coordexp.evaluate: error: {name}: model={model} cannot be "
                                                   "evaluated on a 16-pixel canvas")
    assert why in err
    assert outputs(runs[name]) == []


def test_one_bad_run_among_good_ones_writes_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert ev.main([str(runs["sweep"]), str(runs["mlp"]), "--canvases", "32", "16", "--out", str(out)]) == 2
    assert "error: mlp: model=mlp cannot" in capsys.readouterr().err
    assert not out.exists()
    assert ev.main([str(runs["sweep"]), str(runs["mlp"]), "--canvases", "32", "--out", str(out)]) == 0  # its own
    assert [row["run"] for row in csv.DictReader((out / "canvases.csv").open())] == [
        "mlp", "sweep/0_coordconv", "sweep/1_coordconv"]


def test_a_canvas_no_larger_than_the_square_is_refused(runs, capsys, tmp_path):
    assert ev.main([str(runs["sweep"]), "--canvases", "5", "--out", str(tmp_path)]) == 2
    assert "--canvases 5 is invalid for 0_coordconv: a canvas must be larger than the run's square " \
           "(data.square=5)" in capsys.readouterr().err
    assert outputs(tmp_path) == []


@pytest.mark.parametrize("canvas", ["257", "0", "99999999999999999999"])
def test_a_canvas_past_the_cap_is_refused_before_any_work(runs, capsys, tmp_path, canvas):
    assert ev.main([str(runs["sweep"]), "--canvases", "32", canvas, "--out", str(tmp_path)]) == 2
    assert f"--canvases {canvas} is invalid: a canvas is an integer in [1, 256]" in capsys.readouterr().err
    assert outputs(tmp_path) == []


def test_no_finished_run_is_exit_2(tmp_path, capsys):
    assert ev.main([str(tmp_path), "--canvases", "32"]) == 2
    assert "no finished run under" in capsys.readouterr().err


def test_fully_convolutional_models_pass_the_check(tmp_path):
    for overrides in (["model=conv", "split=quarter"], ["model=coordconv", "model.coord_layers=all"]):
        run_dir = trained(tmp_path, overrides[-1].replace("=", "_"), *overrides)
        ev.check_runs(ev.finished_runs([run_dir]), [16, 48, 64])  # raises ConfigError when it cannot


def test_the_label_is_the_model_and_its_overrides_without_the_seed(runs, tmp_path):
    run = ev.finished_runs([runs["sweep"]])[0]
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    overrides = ["model=coordconv", "model.coords=pixels", "seed=3", "hydra.verbose=true"]
    (hydra_dir / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    run.path = tmp_path
    assert run.label == "coordconv model.coords=pixels"
