"""coordexp's CoordConv layer in someone else's network: an ordinary small image classifier.

The shape of a PaddlePaddle CoordConv tutorial's network (issue 13's source material): three 3x3 convs of
32, 64 and 64 channels, then one CoordConv 64 -> 64 3x3 with stride 2, then two dense layers (the 2x2
max-pools and the dense width 64 are this example's choices). Swapping a
plain layer for a CoordConv one is a one-line change: `CoordConv2d` takes nn.Conv2d's arguments and adds
the coordinate channels (xx, yy in [-1, 1]; `with_r=True` adds a radius) to its input itself, so the layer
before it needs no change. On a 3x32x32 input its CoordConv layer has (64 + 2) * 64 * 9 + 64 = 38,080
parameters (a plain conv: 36,928).

    python scripts/coordconv_in_a_classifier.py   # prints the layers, their output shapes and parameters
"""
from __future__ import annotations

import torch
from torch import nn

from coordexp.nn import CoordConv2d


class CoordConvClassifier(nn.Module):
    """conv 32, conv 64, conv 64 (3x3, ReLU, 2x2 max-pool after the first two), CoordConv 64 (3x3, stride 2),
    dense 64, dense `classes`, for `in_channels` x `size` x `size` images."""

    def __init__(self, in_channels: int = 3, size: int = 32, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            CoordConv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),  # the one CoordConv layer
        )
        side = size // 8  # halved by each pool and by the stride-2 CoordConv
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def main() -> None:
    """Print each layer with its output shape and parameter count for one 3x32x32 image."""
    model = CoordConvClassifier()
    x = torch.zeros(1, 3, 32, 32)
    for layer in [*model.features, *model.classifier]:
        x = layer(x)
        params = sum(p.numel() for p in layer.parameters())
        print(f"{type(layer).__name__:<12} {str(tuple(x.shape)):<18} {params:>7,} params")
    print(f"total {sum(p.numel() for p in model.parameters()):,} params")


if __name__ == "__main__":
    main()
