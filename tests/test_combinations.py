"""Every setting x every multirun preset: those meant for each other compose (and every job of the sweep passes the
check), any other combination is one line that carries Hydra's reason or ours."""
from pathlib import Path

import pytest
from hydra import initialize_config_dir

from coordexp.compose import CONFIG_DIR, compose_config
from coordexp.config import ConfigError
from coordexp.sweep import check_sweep

SETTINGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "setting").glob("*.yaml"))
MULTIRUNS = sorted(p.stem for p in (Path(CONFIG_DIR) / "multirun").glob("*.yaml"))
PAIRS = ("classification_conv", "classification_coordconv", "regression_conv", "regression_coordconv",
         "rendering_conv", "rendering_coordconv")
# The studies run on sampled data, which the paper settings' exhaustive-data keys do not fit; mlp_pixels sweeps the
# model, and every setting belongs to one model
STUDIES = {"placement": ("regression_coordconv", "regression_coordconv_onehot1"),
           "plateau": ("regression_coordconv", "regression_coordconv_onehot1"),
           "canvas_coordconv": ("regression_coordconv", "regression_coordconv_onehot1"),
           "canvas_conv": ("regression_conv", "regression_conv_memorise"),
           "mlp_pixels": ()}


def meant_for(multirun: str) -> set:
    """The settings a multirun preset is meant for (None: the pair's own default): a grid or a search, every
    setting of its task x model; a study, the settings it names."""
    if multirun in STUDIES:
        return {None, *STUDIES[multirun]}
    pair = next(p for p in PAIRS if multirun.startswith(p + "_"))
    return {None, *(s for s in SETTINGS if s == pair or s.startswith(pair + "_"))}


def test_the_groups_are_settings_and_multiruns_and_every_multirun_is_one_kind():
    presets = {p.parent.name for p in Path(CONFIG_DIR).glob("*/*.yaml") if p.read_text().startswith("# @package _global_")}
    assert presets == {"setting", "multirun", "debug"}  # debug/ shrinks any run
    kinds = {m: m.split("_")[2] if m.startswith(PAIRS) else "study" for m in MULTIRUNS}
    assert set(kinds.values()) == {"grid", "search", "study"} and {m for m, k in kinds.items() if k == "study"} == set(STUDIES)


@pytest.mark.parametrize("multirun", MULTIRUNS)
def test_every_setting_composes_with_the_multiruns_meant_for_it_and_no_other(multirun):
    composed = set()
    for setting in [None, *SETTINGS]:
        overrides = [f"multirun={multirun}", *([f"setting={setting}"] if setting else [])]
        try:
            cfg = compose_config(*overrides, hydra_node=True)
            if any(group in cfg.hydra.sweeper.get("params", {}) for group in ("task", "model")):
                with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                    check_sweep(cfg)  # a swept group: each job's choices, as the sweep checks them
        except ConfigError as error:
            message = str(error)
            assert "\n" not in message and (f"multirun={multirun}" in message or f"setting={setting}" in message), \
                message
            continue
        assert cfg.hydra.mode.name == "MULTIRUN", overrides  # no -m
        composed.add(setting)
    assert composed == meant_for(multirun)
