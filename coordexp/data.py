"""The "Not-so-Clevr" squares: every square centre on the canvas, the images built from them, and the splits.

Everything is built once as tensors on the run's device; training batches are index slices of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from coordexp.config import SPLITS

# data/not_so_clevr_generator.py: np.random.seed(MAGIC_SEED_OF_WONDER), then random_split(pct=0.25) per example
AUTHORS_SPLIT_SEED, AUTHORS_TEST_PROBABILITY = 20202, 0.25


def square_centres(canvas: int, square: int) -> Tensor:
    """All (x, y) centres at which a `square`-sided square fits inside the canvas, as a (N, 2) long tensor.

    Ordered row by row (y outer, x inner). For the paper's 64x64 canvas and 9x9 square this is
    x, y in [4, 59]: 56 x 56 = 3136 centres.
    """
    half = square // 2
    axis = torch.arange(half, canvas - half)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def onehot_images(centres: Tensor, canvas: int) -> Tensor:
    """(N, 1, canvas, canvas) float images with a single 1 at row y, column x of each centre."""
    images = torch.zeros(len(centres), 1, canvas, canvas, device=centres.device)
    images[torch.arange(len(centres), device=centres.device), 0, centres[:, 1], centres[:, 0]] = 1.0
    return images


def square_images(centres: Tensor, canvas: int, square: int, value: float) -> Tensor:
    """(N, canvas, canvas) float images: `value` inside the square around each centre (inclusive), 0 outside."""
    half = square // 2
    axis = torch.arange(canvas, device=centres.device)
    inside_x = (axis[None, :] - centres[:, :1]).abs() <= half  # (N, W)
    inside_y = (axis[None, :] - centres[:, 1:]).abs() <= half  # (N, H)
    return (inside_y[:, :, None] & inside_x[:, None, :]).float() * value


def quarter_test_mask(centres: Tensor, canvas: int) -> Tensor:
    """Test set of the quarter split: every centre with x > canvas/2 and y > canvas/2 (never seen in training)."""
    half = canvas / 2
    return (centres[:, 0] > half) & (centres[:, 1] > half)


def uniform_test_mask(n: int, test_fraction: float, seed: int) -> Tensor:
    """Test set of the uniform split: round(n * test_fraction) examples drawn at random with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    n_test = round(n * test_fraction)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:n_test]] = True
    return mask


def authors_test_mask(centres: Tensor) -> Tensor:
    """Test set of the authors' uniform split: in their order (x outer, y inner) each centre goes to test when
    numpy's legacy generator, seeded 20202, draws below 0.25: 768 test, 2368 train on the paper's canvas."""
    draws = np.random.RandomState(AUTHORS_SPLIT_SEED).random_sample(len(centres)) < AUTHORS_TEST_PROBABILITY
    authors_order = np.lexsort((centres[:, 1].cpu().numpy(), centres[:, 0].cpu().numpy()))  # by x, then y
    mask = torch.zeros(len(centres), dtype=torch.bool)
    mask[torch.from_numpy(authors_order)] = torch.from_numpy(draws)
    return mask


def held_out_mask(split: str, centres: Tensor, data: DictConfig) -> Tensor:
    """The boolean test mask of `split` ("uniform" or "quarter") over `centres`, as the `data` config says."""
    if split == "quarter":
        return quarter_test_mask(centres, data.canvas)
    if split == "uniform" and data.uniform_split == "authors":
        return authors_test_mask(centres)
    if split == "uniform":
        return uniform_test_mask(len(centres), data.test_fraction, data.split_seed)
    raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")


@dataclass
class Dataset:
    """Model inputs and targets for every centre, with the indices of the train and test examples."""

    centres: Tensor  # (N, 2) long, (x, y)
    inputs: Tensor
    targets: Tensor
    train_idx: Tensor
    test_idx: Tensor

    def subset(self, part: str) -> tuple[Tensor, Tensor, Tensor]:
        """(centres, inputs, targets) of the "train" or "test" part."""
        idx = self.train_idx if part == "train" else self.test_idx
        return self.centres[idx], self.inputs[idx], self.targets[idx]
