"""Shared test helpers: configs composed with Hydra's compose API, exactly as the CLI composes them."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from coordexp.train import CONFIG_DIR


def make_cfg(*overrides: str) -> DictConfig:
    """The config `python -m coordexp.train OVERRIDES` would run (without the hydra node)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def smoke():
    """Overrides that shrink any run to a seconds-long smoke run."""
    return ["debug=fast"]
