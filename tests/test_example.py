"""scripts/coordconv_in_a_classifier.py: coordexp's CoordConv layer inside an ordinary classifier."""
import importlib.util
from pathlib import Path

import torch
from torch import nn

from coordexp.nn import CoordConv2d

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "coordconv_in_a_classifier.py"


def load_example():
    spec = importlib.util.spec_from_file_location("coordconv_in_a_classifier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_its_coordconv_layer_has_38080_parameters_and_the_shapes_are_right():
    model = load_example().CoordConvClassifier()
    layers = [m for m in model.modules() if isinstance(m, CoordConv2d)]
    assert len(layers) == 1
    coordconv = layers[0]
    assert sum(p.numel() for p in coordconv.parameters()) == 38080  # (64 + 2) * 64 * 9 + 64
    assert coordconv.conv.in_channels == 66 and coordconv.conv.out_channels == 64
    seen = {}
    coordconv.register_forward_hook(lambda module, args, out: seen.update(input=args[0].shape, output=out.shape))
    logits = model(torch.rand(5, 3, 32, 32))
    assert seen == {"input": (5, 64, 8, 8), "output": (5, 64, 4, 4)}
    assert logits.shape == (5, 10)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64]
    assert len([m for m in model.classifier if isinstance(m, nn.Linear)]) == 2


def test_it_trains_through_the_coordinate_channels():
    model = load_example().CoordConvClassifier()
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    weight_grad = next(m for m in model.modules() if isinstance(m, CoordConv2d)).conv.weight.grad
    assert weight_grad[:, 64:].abs().sum() > 0  # the two coordinate input channels get gradient


def test_main_prints_every_layer(capsys):
    load_example().main()
    out = capsys.readouterr().out
    assert "CoordConv2d" in out and "38,080 params" in out and "(1, 10)" in out
