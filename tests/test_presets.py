"""The paper settings (`setting=<task>_<model>_paper`) compose to exactly the authors' setting, key by key,
replacing the pair's CPU setting; the paper's grids are built on them; a bare run keeps its pair's CPU setting."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coordexp.config import ConfigError
from coordexp.data import held_out_mask, square_centres
from coordexp.models import build_model, count_params
from coordexp.compose import CONFIG_DIR
from conftest import make_cfg

# The authors' values, read off their code (uber-research/CoordConv): experiment_logs.sh (the commands),
# util.py (argparse defaults: Adam beta1 .9, beta2 .99; minibatch 256), train.py, model_builders.py (he_normal
# on every conv, no initializer or L2 on Dense), general/lr_policy.py (step cap), not_so_clevr_generator.py.
# Where the paper's text speaks it wins, and the line says so. weight_decay = 2 x their L2 lambda.
COMMON = {
    "optimizer._target_": "torch.optim.Adam",   # --opt adam
    "optimizer.betas": [0.9, 0.99],
    "optimizer.eps": 1e-8,                      # TF's AdamOptimizer default (they pass none)
    "trainer.precision": "fp32",
    "trainer.max_steps_per_epoch": None,        # every batch of every epoch
    "trainer.target": None,                     # no early stop
    "trainer.target_part": "held_out",          # (what a target would be read on: unused without one)
    "model.init": "authors",                    # he_normal kernels, zero biases
    "model.l2_scope": "conv",                   # kernel_regularizer on convs only
    "model.with_r": False,                      # include_r=False
    "data.name": "exhaustive",                  # every centre once (data=sampled is Sen Yang's, not the paper's)
    "data.canvas": 64,
    "data.square": 9,
    "data.square_value": 1.0,                   # the paper's text: binary squares (their file: gray 128/255)
    "data.uniform_split": "authors",            # their draw, with which the paper's numbers were made (text: 80/20)
}
STEP = {"schedule.name": "step", "schedule.every": 200, "schedule.gamma": 0.1, "schedule.max_decays": 4}
CONSTANT = {"schedule.name": "constant"}
PLACED = {"model.coord_layers": "first", "model.coords": "normalized"}  # the paper's CoordConv layer
PRESETS = {
    "classification_coordconv": {
        **CONSTANT, **PLACED, "task.input_coords": "pixels", "model.mul": 1, "trainer.batch_size": 16,
        "trainer.epochs": 50, "optimizer.lr": 0.005, "optimizer.weight_decay": 0.0, "params": 7553},
    "classification_conv": {
        **STEP, "task.input_coords": "pixels", "model.mul": 2, "model.fs": 3, "model.padding": "tf",
        "trainer.batch_size": 16,
        "trainer.epochs": 1000, "optimizer.lr": 0.005, "optimizer.weight_decay": 0.0, "params": 409921},
    "rendering_coordconv": {
        **CONSTANT, **PLACED, "task.input_coords": "pixels", "task.loss": "bce", "task.iou": "weighted",
        "model.mul": 1, "model.fs": 3,  # theirs is 1, which cannot paint a 9x9 square (docs/authors-code.md)
        "model.centre_map": "softmax", "model.painter_width": "fixed", "trainer.batch_size": 16,
        "trainer.epochs": 50, "optimizer.lr": 0.005, "optimizer.weight_decay": 0.0, "params": 11850},
    "rendering_conv": {
        **STEP, "task.input_coords": "pixels", "task.loss": "bce", "task.iou": "weighted", "model.mul": 2,
        "model.fs": 3, "model.padding": "tf", "trainer.batch_size": 16, "trainer.epochs": 1000, "optimizer.lr": 0.005,
        "optimizer.weight_decay": 0.0, "params": 409921},
    "regression_coordconv": {
        **CONSTANT, **PLACED, "task.onehot_scale": 1.0, "task.target": "normalized", "task.loss": "mse",
        "trainer.batch_size": 256, "trainer.epochs": 100, "optimizer.lr": 0.01,
        "optimizer.weight_decay": 2e-5, "params": 906},
    "regression_conv": {
        **CONSTANT, "task.onehot_scale": 1.0, "task.target": "normalized", "task.loss": "mse", "model.mul": 1,
        "model.padding": "tf", "trainer.batch_size": 256, "trainer.epochs": 100,
        "optimizer.lr": 0.001, "optimizer.weight_decay": 2e-4},
}
PER_SPLIT = {  # the authors pick the conv regressor by the data file's name
    ("regression_conv", "uniform"): {"model.regressor": "uniform", "params": 72850},
    ("regression_conv", "quarter"): {"model.regressor": "quarter", "params": 12914},
}
TEST_EXAMPLES = {"uniform": 768, "quarter": 729}  # the authors' draw of 3136 (seed 20202); x, y > 32
# How a run is run, not what it computes.
RUN_MECHANICS = {"seed", "device", "resume", "split.name", "trainer.eval_every", "trainer.eval_batch_size",
                 "trainer.checkpoint_every", "trainer.deterministic", "trainer.keep_freed_memory", "trainer.progress",
                 "trainer.plots", "trainer.plot_examples", "model.fast", "optimizer.fused", "task.name", "model.name"}
# Keys the preset's model, task or schedule never reads.
UNUSED = {"model.r_center", "schedule.final_factor", "data.test_fraction", "data.split_seed"}
UNUSED_BY = {
    "constant": {"schedule.every", "schedule.gamma", "schedule.max_decays"},
    "classification_coordconv": {"model.fs", "model.centre_map", "model.painter_width"},
    "regression_coordconv": {"model.mul", "model.fs", "model.centre_map", "model.painter_width", "task.output"},
    "classification_conv": {"model.regressor"},
    "rendering_conv": {"model.regressor"},
    "regression_conv": {"model.fs", "task.output"},
}
# The authors' grids (experiment_logs.sh), as the sweeper's values; L2 lambda as weight_decay = 2 lambda.
GRIDS = {
    "classification_coordconv": {"optimizer.lr": [1e-3, 5e-3, 1e-2], "optimizer.weight_decay": [0, 2e-3]},
    "classification_conv": {"trainer.batch_size": [16, 32], "optimizer.lr": [1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2],
                            "optimizer.weight_decay": [0, 2e-3, 2e-2], "model.fs": [2, 3, 4], "model.mul": [1, 2, 3]},
    "rendering_coordconv": {"optimizer.lr": [1e-3, 5e-3], "optimizer.weight_decay": [0, 2e-3], "model.mul": [1, 2]},
    "rendering_conv": {"trainer.batch_size": [16, 32], "optimizer.lr": [1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2],
                       "optimizer.weight_decay": [0, 2e-3, 2e-2], "model.fs": [2, 3, 4], "model.mul": [1, 2, 3],
                       "task.loss": ["bce", "mse"]},
    "regression_conv": {"optimizer.lr": [5e-4, 1e-3, 1e-2], "optimizer.weight_decay": [2e-5, 2e-4, 1e-3]},
}


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def leaf_keys(cfg, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        keys |= leaf_keys(value, f"{name}.") if OmegaConf.is_dict(value) else {name}
    return keys


def number_or_text(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def expected(name: str, split: str) -> dict:
    return {**COMMON, **PRESETS[name], **PER_SPLIT.get((name, split), {})}


@pytest.mark.parametrize("split", ["uniform", "quarter"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_paper_preset_is_the_authors_setting_key_by_key(name, split):
    cfg = make_cfg(f"setting={name}_paper", f"split={split}")
    want = expected(name, split)
    got = {key: OmegaConf.select(cfg, key) for key in want if key != "params"}
    got = {key: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for key, v in got.items()}
    assert got == {key: v for key, v in want.items() if key != "params"}
    assert count_params(build_model(cfg.model, cfg.task.name, cfg.data.canvas)) == want["params"]
    assert int(held_out_mask(split, square_centres(64, 9), cfg.data).sum()) == TEST_EXAMPLES[split]
    # every key of the composed config is in the table, or says how a run is run, or is never read
    unused = UNUSED | UNUSED_BY.get(name, set()) | UNUSED_BY.get(cfg.schedule.name, set())
    assert leaf_keys(cfg) - want.keys() - RUN_MECHANICS - unused == set()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_paper_setting_replaces_the_cpu_setting_of_its_pair(name):
    assert (Path(CONFIG_DIR) / "setting" / f"{name}.yaml").is_file()  # there is one to leak
    assert compose_with_hydra(f"setting={name}_paper").hydra.runtime.choices.setting == f"{name}_paper"


def test_the_issues_example_shows_the_authors_setting():
    cfg = make_cfg("setting=classification_coordconv_paper", "split=quarter")
    assert (list(cfg.optimizer.betas), cfg.optimizer.lr, cfg.trainer.batch_size) == ([0.9, 0.99], 0.005, 16)
    assert (cfg.trainer.precision, cfg.optimizer.weight_decay, cfg.model.init) == ("fp32", 0.0, "authors")


@pytest.mark.parametrize("name", ["classification_coordconv", "regression_coordconv", "rendering_coordconv"])
def test_a_bare_run_keeps_its_pairs_cpu_setting(name):
    task, model = name.split("_")
    cfg = make_cfg(f"task={task}", "split=quarter", f"model={model}")
    setting = OmegaConf.load(Path(CONFIG_DIR) / "setting" / f"{name}.yaml")
    for key in leaf_keys(setting):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(setting, key), key


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_the_papers_grids_are_the_authors_and_sit_on_the_presets(name):
    cfg = compose_with_hydra(f"setting={name}_paper", f"multirun={name}_grid")
    assert cfg.hydra.runtime.choices.setting == f"{name}_paper"
    params = {key: [number_or_text(v) for v in str(values).split(",")]
              for key, values in cfg.hydra.sweeper.params.items()}
    assert params == GRIDS[name]
    want = expected(name, "quarter")
    for key in want.keys() - GRIDS[name].keys() - {"params", "model.regressor"}:
        got = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_container(got) if OmegaConf.is_config(got) else got) == want[key], key


# --- the authors' choices are checked like every key: the key, the value and what is allowed -------------

@pytest.mark.parametrize("overrides, message", [
    (["model.init=xavier"], "model.init='xavier' is invalid: valid choices: authors, torch"),
    (["model.l2_scope=dense"], "model.l2_scope='dense' is invalid: valid choices: conv, all"),
    (["task=rendering", "model.painter_width=wide"],
     "model.painter_width='wide' is invalid: valid choices: fixed, scaled"),
    (["task=rendering", "task.iou=soft"], "task.iou='soft' is invalid: valid choices: weighted, binary"),
    (["task=rendering", "task.loss=l1"], "task.loss='l1' is invalid: valid choices: bce, mse, mse_sigmoid"),
    (["split=uniform", "data.uniform_split=random"],
     "data.uniform_split='random' is invalid: valid choices: fraction, authors"),
    (["schedule.name=step", "schedule.max_decays=-1"],
     "schedule.max_decays=-1 is invalid: must be an integer in [0, 1000000000] or null"),
])
def test_bad_values_of_the_authors_choices_are_named(overrides, message):
    with pytest.raises(ConfigError) as error:
        make_cfg(*overrides)
    assert str(error.value) == message


@pytest.mark.parametrize("overrides, setting", [
    (["split=quarter", "data.uniform_split=authors"], "split.name"),
    (["split=uniform", "data.uniform_split=authors", "data.test_fraction=0.25"], "data.uniform_split"),
    (["split=uniform", "data.uniform_split=authors", "data.split_seed=3"], "data.uniform_split"),
    (["schedule.name=constant", "schedule.max_decays=2"], "schedule.name"),
    (["task=classification", "model.painter_width=scaled"], "task.name"),
])
def test_a_choice_with_no_effect_is_refused(overrides, setting):
    with pytest.raises(ConfigError, match=f"has no effect with {setting}="):
        make_cfg(*overrides)
