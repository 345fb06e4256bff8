"""The config schema: declared once (coordexp/config.py), every composed config checked against it."""
import dataclasses
import json
import math

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from coordexp.compose import compose_config
from coordexp.config import SCHEMAS, Config, ConfigError, Data, OptimizerArgs, Schedule, Trainer, check

ALL_SCHEMAS = [Config, Data, Schedule, Trainer, OptimizerArgs] + [s for o in SCHEMAS.values() for s in o.values()]


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=lambda s: s.__name__)
def test_every_number_in_the_schema_has_a_range(schema):
    for f in dataclasses.fields(schema):
        if f.type in ("int", "float", "Optional[int]", "Optional[float]"):
            assert "check" in f.metadata, f"{schema.__name__}.{f.name} has a type but no range"


@pytest.mark.parametrize("schema", ALL_SCHEMAS, ids=lambda s: s.__name__)
def test_every_number_in_the_schema_has_both_bounds(schema):
    # an integer past what its type holds (int64), or a float that is not finite, is refused by its range check
    for f in dataclasses.fields(schema):
        if f.type in ("int", "Optional[int]"):
            assert f.metadata["check"](2**63) and f.metadata["check"](-2**63 - 1), f"{schema.__name__}.{f.name}"
        if f.type in ("float", "Optional[float]"):
            assert all(f.metadata["check"](v) for v in (math.inf, -math.inf, math.nan)), f"{schema.__name__}.{f.name}"


@pytest.mark.parametrize("overrides, words", [
    (["seed=4294967296"], "seed=4294967296 is invalid: must be an integer in [0, 4294967295]"),
    (["data.split_seed=99999999999999999999999"], "must be an integer in [0, 4294967295]"),
    (["model=conv", "model.mul=65"], "model.mul=65 is invalid: must be an integer in [1, 64]"),
    (["model=mlp", "model.hidden=100000"], "model.hidden=100000 is invalid: must be an integer in [1, 65536]"),
    (["data=sampled", "data.train_size=1048577"], "data.train_size=1048577 is invalid: must be an integer in [1, 1048576]"),
    (["trainer.batch_size=2000000"], "trainer.batch_size=2000000 is invalid: must be an integer in [1, 1048576]"),
    (["trainer.epochs=1000000001"], "trainer.epochs=1000000001 is invalid: must be an integer in [1, 1000000000]"),
])
def test_a_number_past_its_cap_is_refused_before_anything_is_allocated(overrides, words):
    with pytest.raises(ConfigError) as error:
        compose_config(*overrides)
    assert words in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("task", ["classification", "regression", "rendering"])
@pytest.mark.parametrize("model", ["conv", "coordconv", "mlp", "coordmlp"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_composed_config_is_typed_complete_and_checked(task, model, optimizer):
    extra = ["~optimizer.betas"] if optimizer in ("sgd", "rmsprop") and (task, model) == ("classification",
                                                                                         "coordconv") else []
    cfg = compose_config(f"task={task}", f"model={model}", f"optimizer={optimizer}", *extra)
    assert OmegaConf.missing_keys(cfg) == set()
    for group, options in SCHEMAS.items():  # each group option is bound to its own schema
        assert OmegaConf.get_type(cfg[group]) is options[cfg[group].name]
    assert OmegaConf.get_type(cfg.trainer) is Trainer and OmegaConf.get_type(cfg) is Config
    check(cfg)


def test_choices_are_plain_strings_in_comparisons_json_and_text():
    cfg = compose_config("task=rendering", "model=coordconv", "trainer.precision=bf16")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert cfg.trainer.precision == "bf16" and f"{cfg.trainer.precision}" == "bf16" and str(cfg.task.loss) == "bce"
    assert json.loads(json.dumps(container))["trainer"]["precision"] == "bf16"
    assert "precision: bf16" in OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize("overrides, words", [
    (["+trainer.epoch=3"], ["trainer.epoch", "not in struct"]),  # an appended key gets past Hydra, not the check
    (["optimizer.lr=inf"], ["optimizer.lr=inf", "finite"]),
    (["optimizer.betas=[0.9,1.0]"], ["optimizer.betas", "[0, 1)"]),
    (["trainer.epochs=2.5"], ["trainer.epochs", "integer in [1, 1000000000]"]),
    (["model=conv", "model.regressor=diagonal"], ["model.regressor", "uniform, quarter"]),
    (["task=rendering", "task.loss=l1"], ["task.loss", "bce, mse"]),
    (["setting=none"], ["setting=none", "classification_coordconv"]),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(overrides, words):
    with pytest.raises(ConfigError) as error:
        compose_config(*overrides)
    assert all(word in str(error.value) for word in words), str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("args, words", [
    (["model=foo"], "model=foo is invalid: valid choices: conv, coordconv, coordmlp, mlp"),
    (["model=mlp", "+model.foo=1"], "not in struct"),
    (["trainer.epochs=abc"], "trainer.epochs='abc' is invalid"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["debug=nothing"], "debug=nothing is invalid: valid choices: fast"),
    (["--cfg", "job", "model=foo"], "model=foo is invalid"),  # Hydra's own flags: its composition error, one line
    (["setting=classification_conv"],  # a setting of another pair: both named
     "setting=classification_conv is invalid with task=regression model=coordconv: it is a setting of another"),
    (["task=classification", "model=conv", "setting=rendering_conv"], "setting=rendering_conv is invalid with "
     "task=classification model=conv"),
    (["-m", "task=classification", "model=conv", "setting=classification_conv,rendering_conv"],
     "setting=rendering_conv is invalid with task=classification model=conv"),
    (["setting=rendering_coordconv_paper", "multirun=placement"],  # Hydra's reason, and both presets named
     "Key 'uniform_split' not in 'Sampled' (data.uniform_split); the presets setting=rendering_coordconv_paper, "
     "multirun=placement do not combine"),
    (["model=conv", "multirun=placement"],  # a multirun for another pair: both named
     "multirun=placement is invalid with task=regression model=conv: it is a multirun of task=regression "
     "model=coordconv"),
])
def test_the_command_line_is_checked_before_hydra_creates_anything(tmp_path, args, words):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "coordexp.train", *args, f"hydra.run.dir={run_dir}",
                             f"hydra.sweep.dir={run_dir}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("coordexp: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr
    assert not run_dir.exists()
