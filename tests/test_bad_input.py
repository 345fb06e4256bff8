"""Bad input on the command line: one clear line naming the key, the value and what is allowed, a
non-zero exit, no traceback, and nothing written."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

# (id, overrides, texts the error must contain). {tmp} is a fresh directory; {tmp}/file is a plain file.
CASES = [
    ("unknown split", ["split=diagonal"], ["diagonal", "quarter", "uniform"]),
    ("unknown model", ["model=resnet"], ["resnet", "conv", "coordconv", "mlp", "coordmlp"]),
    ("unknown task", ["task=segmentation"], ["segmentation", "classification", "regression", "rendering"]),
    ("unknown optimizer", ["optimizer=lbfgs"], ["lbfgs", "adam", "sgd", "rmsprop"]),
    ("unknown schedule", ["schedule.name=linear"], ["schedule.name", "linear", "constant, step, cosine"]),
    ("unknown loss", ["task=rendering", "task.loss=hinge"], ["task.loss", "hinge", "bce, mse"]),
    ("unknown device", ["device=tpu"], ["device", "tpu", "auto, cpu, cuda"]),
    ("unknown key", ["trainer.epoch=3"], ["trainer.epoch", "not in struct"]),
    ("epochs not a number", ["trainer.epochs=abc"], ["trainer.epochs", "abc", "integer in [1, 1000000000]"]),
    ("lr not a number", ["optimizer.lr=fast"], ["optimizer.lr", "fast", "(0, inf]"]),
    ("with_r not a bool", ["model.with_r=maybe"], ["model.with_r", "maybe", "true or false"]),
    ("seed not an integer", ["seed=1.5"], ["seed", "1.5", "integer in [0, 4294967295]"]),
    ("negative lr", ["optimizer.lr=-1"], ["optimizer.lr", "-1", "(0, inf]"]),
    ("zero epochs", ["trainer.epochs=0"], ["trainer.epochs", "0", "integer in [1, 1000000000]"]),
    ("zero batch", ["trainer.batch_size=0"], ["trainer.batch_size", "0", "integer in [1, 1048576]"]),
    ("test fraction above 1", ["split=uniform", "data.test_fraction=1.5"], ["data.test_fraction", "1.5", "(0, 1)"]),
    ("canvas not a power of 2", ["data.canvas=100"], ["data.canvas", "100", "power of two"]),
    ("even square", ["data.square=10"], ["data.square", "10", "odd"]),
    ("test fraction with quarter", ["split=quarter", "data.test_fraction=0.3"],
     ["data.test_fraction", "0.3", "split.name=uniform"]),
    ("radius without coordinates", ["model=conv", "model.with_r=true"], ["model.with_r", "conv", "coordconv"]),
    ("step knob with constant", ["schedule.every=5"], ["schedule.every", "5", "schedule.name=step"]),
    ("nesterov without momentum", ["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"],
     ["optimizer.nesterov", "optimizer.momentum=0", "> 0"]),
    ("unknown centre map", ["task=rendering", "model.centre_map=delta"], ["model.centre_map", "delta", "density, softmax"]),
    ("centre map outside rendering", ["task=classification", "model.centre_map=softmax"],
     ["model.centre_map", "task.name='classification'", "task.name=rendering"]),
    ("Adam's betas with SGD", ["task=classification", "model=coordconv", "optimizer=sgd"],
     ["optimizer.betas", "torch.optim.SGD", "momentum", "~optimizer.betas"]),
    ("unwritable output dir", ["hydra.run.dir={tmp}/file/run"], ["hydra.run.dir", "{tmp}/file/run", "cannot write"]),
    ("resume of a missing dir", ["resume={tmp}/missing"], ["resume", "{tmp}/missing", "no checkpoint.pt"]),
    ("unknown setting", ["setting=paper"], ["setting=paper", "classification_conv", "rendering_coordconv"]),
    ("unknown debug preset", ["debug=slow"], ["debug=slow", "fast"]),
    ("appended unknown key", ["+trainer.foo=1"], ["trainer.foo", "not in struct", "epochs"]),
    ("unknown top-level key", ["epochs=3"], ["epochs", "not in struct"]),
    ("key of another task", ["task=classification", "task.loss=mse"], ["task.loss", "task=rendering"]),
    ("key of another model", ["model=mlp", "model.fs=3"], ["model.fs", "model=conv", "model=coordconv"]),
    ("blur of a coordinate input", ["task=classification", "data=sampled", "data.blur_sigma=2"],
     ["data.blur_sigma=2", "task=classification", "task=regression"]),
    ("exhaustive key with sampled data", ["data=sampled", "data.split_seed=3"], ["data.split_seed", "not in struct"]),
    ("unknown data mode", ["data=random"], ["data=random", "exhaustive", "sampled"]),
    ("empty sampled set", ["data=sampled", "data.valid_size=0"], ["data.valid_size", "0", "integer in [1, 1048576]"]),
    ("output with normalized targets", ["task.output=raw"], ["task.output", "task.target='normalized'", "pixels"]),
    ("unknown regression loss", ["task.loss=huber"], ["task.loss", "huber", "mse, l1"]),
    ("unparsable override", ["trainer.epochs=[1"], ["trainer.epochs=[1", "cannot be parsed"]),
    ("override without a value", ["trainer.epochs"], ["trainer.epochs", "cannot be parsed"]),
    ("infinite lr", ["optimizer.lr=inf"], ["optimizer.lr", "inf", "finite"]),
    ("nan weight decay", ["optimizer.weight_decay=nan"], ["optimizer.weight_decay", "nan", "finite"]),
    ("infinite onehot scale", ["task=regression", "task.onehot_scale=inf"], ["task.onehot_scale", "inf", "finite"]),
    ("infinite target", ["trainer.target=inf"], ["trainer.target", "inf", "finite"]),
    ("bad precision", ["trainer.precision=fp16"], ["trainer.precision", "fp16", "auto, bf16, fp32"]),
    ("bad value in a sweep", ["-m", "trainer.epochs=1,0"], ["trainer.epochs", "0", "integer in [1, 1000000000]"]),
    ("unknown choice in a sweep", ["-m", "model=coordconv,foo"], ["model=foo", "conv, coordconv"]),
]
if not torch.cuda.is_available():
    CASES.append(("cuda without CUDA", ["device=cuda"], ["device", "cuda", "not available", "auto, cpu, cuda"]))


def run_case(tmp, overrides):
    run_dir = tmp / "run"
    args = [o.format(tmp=tmp) for o in overrides]
    if "-m" in args:
        args.append(f"hydra.sweep.dir={tmp / 'sweep'}")
    elif not any(a.startswith(("hydra.run.dir=", "resume=")) for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    smoke = [] if any(a.startswith("debug=") for a in args) else ["debug=fast"]
    return subprocess.run([sys.executable, "-m", "coordexp.train", *args, *smoke],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once through the real CLI, a few at a time (each is mostly interpreter start-up)."""
    dirs = {case_id: tmp_path_factory.mktemp("bad") for case_id, _, _ in CASES}
    for tmp in dirs.values():
        (tmp / "file").write_text("a file, not a directory")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case_id: pool.submit(run_case, dirs[case_id], overrides) for case_id, overrides, _ in CASES}
    return {case_id: (dirs[case_id], future.result()) for case_id, future in futures.items()}


@pytest.mark.parametrize("case_id, overrides, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(results, case_id, overrides, expected):
    tmp, result = results[case_id]
    assert result.returncode == 2
    assert result.stderr.startswith("coordexp: error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in expected:
        assert text.format(tmp=tmp) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 15, result.stderr  # short, not a dump
    assert sorted(p.name for p in tmp.iterdir()) == ["file"]  # nothing written


@pytest.mark.parametrize("module, args, words", [
    ("aggregate", [], "the following arguments are required: dir"),
    ("aggregate", [".", "--x", "seed"], "--x and --y go together"),
    ("evaluate", ["."], "the following arguments are required: --canvases"),
    ("evaluate", [".", "--canvases", "abc"], "argument --canvases: invalid int value: 'abc'"),
    ("reproduce", ["--budget", "huge"], "argument --budget: invalid choice: 'huge'"),
    ("reproduce", ["--seeds", "-1"], "--seeds -1 is invalid"),
    ("reproduce", ["--workers", "0"], "--workers=0 is invalid"),
])
def test_a_bad_argument_to_every_other_command_is_one_line_and_exit_2(tmp_path, module, args, words):
    result = subprocess.run([sys.executable, "-m", f"coordexp.{module}", *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"coordexp.{module}: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.steps
@pytest.mark.parametrize("name", ["zero\u200bwidth", "é,accent", "it's", "sp ace"])
def test_a_legal_path_outside_hydras_grammar_is_taken_as_typed(tmp_path, name):
    run_dir = tmp_path / name
    result = subprocess.run([sys.executable, "-m", "coordexp.train", "debug=fast", "trainer.plots=false",
                             f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "metrics.json").is_file() and [p.name for p in tmp_path.iterdir()] == [name]
