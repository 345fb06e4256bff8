"""Shared test helpers: configs composed with Hydra's compose API, exactly as the CLI composes them."""
from __future__ import annotations

import pytest

from coordexp.train import compose_config as make_cfg


@pytest.fixture
def smoke():
    """Overrides that shrink any run to a seconds-long smoke run."""
    return ["debug=fast"]
