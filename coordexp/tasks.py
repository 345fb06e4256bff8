"""The three supervised tasks: what goes in, what comes out, the loss and the per-example metrics.

One training loop serves every task; a task supplies its data, loss and metrics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from coordexp.config import ConfigError
from coordexp.data import heatmap_images, onehot_images, square_images
from coordexp.rundir import as_typed

# every metric any task reports: each run registers them all as HParams columns, so TensorBoard
# shows the same columns for every run of a sweep that mixes tasks
METRICS = ("accuracy", "pixel_error", "iou")


def coordinate_inputs(centres: Tensor, canvas: int, mode: str) -> Tensor:
    """(x, y) model inputs: scaled to [-1, 1] exactly like the coordinate channels, or raw pixel indices."""
    if mode == "normalized":
        return centres.float() / (canvas - 1) * 2 - 1
    return centres.float()


class DegenerateData(ConfigError):
    """Settings whose inputs or targets carry no position: not finite, all zero, or the same at every position."""


class Task:
    """Base class: a task names its metrics and says which one is the headline."""

    name: str
    headline: str  # the metric shown in the progress bar and the success map
    higher_is_better: bool
    built_from: dict[str, tuple[str, ...]]  # the keys (task.*, data.*) each of "inputs" and "targets" is built from

    def __init__(self, cfg: DictConfig, data_cfg: DictConfig):
        self.cfg = cfg
        self.canvas = data_cfg.canvas
        self.data_cfg = data_cfg

    def build(self, centres: Tensor) -> tuple[Tensor, Tensor]:
        """Model inputs and targets for every centre."""
        raise NotImplementedError

    def check_data(self, centres: Tensor, inputs: Tensor, targets: Tensor) -> None:
        """DegenerateData, naming the keys they are built from, when the inputs or the targets built for `centres` are
        not finite, or (the positions differing) all zero or the same for every position: nothing could be learnt
        from them, and a loss of NaN would read as divergence."""
        differ = bool((centres != centres[:1]).any())
        for what, values in (("inputs", inputs), ("targets", targets)):
            values = values.flatten(1) if values.dim() > 1 else values[:, None]
            problem = ("not finite (NaN or infinity)" if not bool(values.isfinite().all())
                       else None if not differ
                       else "all zero" if not bool(values.any())
                       else "the same for every position" if bool((values == values[:1]).all()) else None)
            if problem:
                settings = ", ".join(f"{key}={as_typed(self._section(key)[key.split('.')[1]])}"
                                     for key in self.built_from[what] if key.split(".")[1] in self._section(key))
                raise DegenerateData(f"degenerate data: the {self.name} {what} built with {settings} are {problem}, "
                                     "so nothing can be learnt from them; choose other values (nothing was trained)")

    def _section(self, key: str) -> DictConfig:
        return self.cfg if key.startswith("task.") else self.data_cfg

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Scalar training loss of a batch."""
        raise NotImplementedError

    def per_example(self, outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Each metric as a (N,) float tensor, one value per example; the reported metric is its mean."""
        raise NotImplementedError


class Classification(Task):
    """Supervised coordinate classification: (x, y) in, a 64x64 map of logits out, softmax over all pixels."""

    name, headline, higher_is_better = "classification", "accuracy", True
    built_from = {"inputs": ("task.input_coords", "data.canvas"), "targets": ("data.canvas",)}

    def build(self, centres):
        inputs = coordinate_inputs(centres, self.canvas, self.cfg.input_coords)
        return inputs, centres[:, 1] * self.canvas + centres[:, 0]

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs.flatten(1).float(), targets)

    picture_label = "softmax"

    def pictures(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Target images (one-hot) and predicted images (softmax over the canvas), (N, H, W) each."""
        onehot = torch.zeros_like(outputs).flatten(1)
        onehot[torch.arange(len(targets)), targets] = 1.0
        return onehot.view_as(outputs), torch.softmax(outputs.flatten(1), dim=1).view_as(outputs)

    def per_example(self, outputs, targets):
        pred = outputs.flatten(1).argmax(dim=1)
        dx = (pred % self.canvas - targets % self.canvas).float()
        dy = (pred // self.canvas - targets // self.canvas).float()
        return {"accuracy": (pred == targets).float(), "pixel_error": torch.sqrt(dx**2 + dy**2)}


class Regression(Task):
    """Supervised coordinate regression: the one-hot (or blurred) image in, (x, y) out, scaled by 1 / canvas
    (task.target=normalized, the paper) or in pixels; MSE or L1 loss on the target's units."""

    name, headline, higher_is_better = "regression", "pixel_error", False
    built_from = {"inputs": ("data.blur_sigma", "task.onehot_scale"), "targets": ("task.target", "data.canvas")}

    def build(self, centres):
        sigma = self.data_cfg.get("blur_sigma")  # the sampled mode's; the exhaustive mode has none
        images = heatmap_images(centres, self.canvas, sigma) if sigma else onehot_images(centres, self.canvas)
        targets = centres.float() / self.canvas if self.cfg.target == "normalized" else centres.float()
        return images * self.cfg.onehot_scale, targets

    def predictions(self, outputs: Tensor) -> Tensor:
        """The model's outputs in the target's units: x canvas for pixel targets with task.output=canvas."""
        outputs = outputs.float()
        return outputs * self.canvas if self.cfg.target == "pixels" and self.cfg.output == "canvas" else outputs

    def loss(self, outputs, targets):
        loss = F.l1_loss if self.cfg.loss == "l1" else F.mse_loss
        return loss(self.predictions(outputs), targets)

    def pixels(self, coordinates: Tensor) -> Tensor:
        """Coordinates in the target's units (a target, or a prediction) in pixels."""
        return coordinates * self.canvas if self.cfg.target == "normalized" else coordinates

    def per_example(self, outputs, targets):
        pred, true = self.pixels(self.predictions(outputs)), self.pixels(targets)
        exact = (pred.round() == true.round()).all(dim=1)
        return {"pixel_error": (pred - true).norm(dim=1), "accuracy": exact.float()}


class Rendering(Task):
    """Supervised rendering: (x, y) in, a 64x64 map of logits out that paints the square; per-pixel loss."""

    name, headline, higher_is_better = "rendering", "iou", True
    built_from = {"inputs": ("task.input_coords", "data.canvas"), "targets": ("data.square_value", "data.square")}

    def build(self, centres):
        inputs = coordinate_inputs(centres, self.canvas, self.cfg.input_coords)
        return inputs, square_images(centres, self.canvas, self.data_cfg.square, self.data_cfg.square_value)

    def loss(self, outputs, targets):
        outputs = outputs.float()
        if self.cfg.loss == "mse":  # the authors' --mse: the squared error of the logits themselves
            return F.mse_loss(outputs, targets)
        if self.cfg.loss == "mse_sigmoid":
            return F.mse_loss(torch.sigmoid(outputs), targets)
        return F.binary_cross_entropy_with_logits(outputs, targets)

    picture_label = "sigmoid"

    def pictures(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Target squares and predicted per-pixel probabilities, (N, H, W) each."""
        return targets, torch.sigmoid(outputs)

    def per_example(self, outputs, targets):
        """IoU of the painted pixels (sigmoid > 0.5) with the square (target > 0). With `task.iou=weighted` the
        intersection counts each pixel at its target value, as the authors' code does: the same for binary
        squares, capped at data.square_value for their gray ones."""
        painted = outputs.flatten(1) > 0  # sigmoid > 0.5
        target = targets.flatten(1)
        square = target > 0
        weight = target if self.cfg.iou == "weighted" else square.float()
        intersection = (painted * weight).sum(dim=1)
        union = (painted | square).sum(dim=1).float()
        return {"iou": intersection / union.clamp(min=1)}


# each task's class by name: its headline metric and direction are class attributes, read from here
TASK_CLASSES: dict[str, type[Task]] = {cls.name: cls for cls in (Classification, Regression, Rendering)}


def build_task(task_cfg: DictConfig, data_cfg: DictConfig) -> Task:
    """The task named by `task_cfg.name`."""
    return TASK_CLASSES[task_cfg.name](task_cfg, data_cfg)
