"""The paper's effect, measured: CoordConv generalises to the unseen quarter where convolution does not."""
import pytest
import torch

from coordexp.precision import resolve_precision
from coordexp.run import train
from conftest import make_cfg

pytestmark = pytest.mark.steps


def test_coordconv_learns_the_quarter_split_of_classification_and_conv_does_not(tmp_path):
    # Both with their defaults, cut to the same two-epoch budget.
    budget = ["task=classification", "split=quarter", "trainer.epochs=2", "trainer.plots=false",
              "trainer.progress=false"]
    coordconv = train(make_cfg(*budget, "model=coordconv"), tmp_path / "coordconv")
    conv = train(make_cfg(*budget, "model=conv"), tmp_path / "conv")
    assert coordconv["test"]["accuracy"] >= 0.99
    assert coordconv["precision"] == resolve_precision("auto", torch.device("cpu"))  # the recipe's auto, resolved
    assert conv["test"]["accuracy"] <= 0.05
    assert conv["test"]["pixel_error"] > 5 * max(coordconv["test"]["pixel_error"], 0.5)
