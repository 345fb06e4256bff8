"""The "Not-so-Clevr" squares: every square centre on the canvas (the exhaustive mode) or positions drawn at random
(the sampled mode), the images built from them, and the splits.

Everything is built once as tensors on the run's device; training batches are index slices of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from coordexp.config import SPLITS

PARTS = ("train", "valid", "test")  # every part a data mode can have, in the order reported

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


def heatmap_images(centres: Tensor, canvas: int, sigma: float) -> Tensor:
    """(N, 1, canvas, canvas) one-hot images blurred by a Gaussian of `sigma` pixels, each rescaled to a peak of 1.

    Blurring a single hot pixel with a sampled Gaussian and dividing by its peak is exactly
    exp(-d^2 / (2 sigma^2)) at distance d from the centre, so it is computed in closed form.
    """
    axis = torch.arange(canvas, device=centres.device, dtype=torch.float32)
    dx2 = (axis[None, :] - centres[:, :1]) ** 2  # (N, W)
    dy2 = (axis[None, :] - centres[:, 1:]) ** 2  # (N, H)
    return torch.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma**2)).unsqueeze(1)


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


def draw_positions(candidates: Tensor, size: int, seed: int) -> Tensor:
    """`size` positions drawn uniformly from `candidates` (N, 2) with their own seed, duplicates allowed."""
    generator = torch.Generator().manual_seed(seed)
    return candidates[torch.randint(len(candidates), (size,), generator=generator)]


def sampled_centres(split: str, data: DictConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """The sampled mode's positions, train then valid then test, and each part's indices into them.

    Positions are drawn among the centres where the square fits; quarter split: train from outside the
    held-out quarter, valid and test from inside it; uniform split: all three from every centre.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    centres = square_centres(data.canvas, data.square)
    in_quarter = quarter_test_mask(centres, data.canvas)
    seen, held_out = (centres[~in_quarter], centres[in_quarter]) if split == "quarter" else (centres, centres)
    drawn = [draw_positions(seen, data.train_size, data.train_seed),
             draw_positions(held_out, data.valid_size, data.valid_seed),
             draw_positions(held_out, data.test_size, data.test_seed)]
    bounds = torch.tensor([0] + [len(d) for d in drawn]).cumsum(0).tolist()
    parts = {part: torch.arange(bounds[i], bounds[i + 1]) for i, part in enumerate(PARTS)}
    return torch.cat(drawn), parts


def exhaustive_centres(split: str, data: DictConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """Every centre once, and the indices of the split's train and test parts."""
    centres = square_centres(data.canvas, data.square)
    is_test = held_out_mask(split, centres, data)
    return centres, {"train": (~is_test).nonzero().squeeze(1), "test": is_test.nonzero().squeeze(1)}


def data_centres(split: str, data: DictConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """The centres of the data mode `data.name` and the indices of its parts ("train", ["valid",] "test")."""
    return (sampled_centres if data.name == "sampled" else exhaustive_centres)(split, data)


def selection_part(parts: dict) -> str:
    """The part that selects (trainer.target stopping, the best of a sweep): "valid" where there is one, else
    "test"; `parts` is anything keyed by part name (an evaluation's metrics, a metrics.json)."""
    return "valid" if "valid" in parts else "test"


@dataclass
class Dataset:
    """Model inputs and targets for every example, with the indices of the train, test and (if any) valid ones."""

    centres: Tensor  # (N, 2) long, (x, y)
    inputs: Tensor
    targets: Tensor
    train_idx: Tensor
    test_idx: Tensor
    valid_idx: Tensor | None = None  # the sampled mode's; the exhaustive mode has none

    def parts(self) -> dict[str, Tensor]:
        """Each part's indices, train, valid (where there is one), then test."""
        valid = {} if self.valid_idx is None else {"valid": self.valid_idx}
        return {"train": self.train_idx, **valid, "test": self.test_idx}

    def subset(self, part: str) -> tuple[Tensor, Tensor, Tensor]:
        """(centres, inputs, targets) of the "train", "valid" or "test" part."""
        idx = self.parts()[part]
        return self.centres[idx], self.inputs[idx], self.targets[idx]
