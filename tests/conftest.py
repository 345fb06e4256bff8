"""Shared test helpers: configs composed with Hydra's compose API, exactly as the CLI composes them."""
from __future__ import annotations

import pytest

from coordexp.compose import compose_config


def make_cfg(*overrides: str):
    """The checked config `python -m coordexp.train OVERRIDES` runs (no hydra node)."""
    return compose_config(*overrides)


@pytest.fixture
def smoke():
    """Overrides that shrink any run to a seconds-long smoke run."""
    return ["debug=fast"]
