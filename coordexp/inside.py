"""Looking inside a trained model: its parameters over training, the input with its coordinate channels, the
regressor's maps before the pooling, the renderer's centre map, and the classifier's softmax around the target
(the paper's Figure 5). Activations are read with forward hooks on one evaluation-mode pass of a few examples,
after training: the training step is untouched.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import cm
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from coordexp.loop import predict
from coordexp.models import CoordConvRenderer, tile
from coordexp.nn import AddCoords
from coordexp.plots import TEST_COLOUR, TRAIN_COLOUR, spread

CROP_RADIUS = 5  # the softmax crop is (2r+1) pixels square around the target, as the paper's Figure 5 zooms in
MAX_CHANNELS = 8  # feature maps shown per example


# --- what to look at -----------------------------------------------------------------------------------------

def first_layer_input(model: nn.Module, inputs: Tensor, canvas: int) -> tuple[Tensor, list[str]] | None:
    """The input as an image with the coordinate channels the model's first AddCoords appends, (N, C, H, W), and
    the channels' names. A painter's (x, y) is tiled over the canvas, as its CoordConv layer sees it; None for a
    model that takes (x, y) and adds no coordinate channels (the deconv painter, the MLP painter)."""
    add_coords = next((m for m in model.modules() if isinstance(m, AddCoords)), None)
    if inputs.dim() == 4:
        images, names = inputs, ["input"]
    elif add_coords is not None:
        images, names = tile(inputs, canvas, canvas), ["x (tiled)", "y (tiled)"]
    else:
        return None
    if add_coords is None:
        return images, names
    return add_coords(images), names + ["xx", "yy", "rr"][:add_coords.extra_channels]


def maps_before_pooling(model: nn.Module, inputs: Tensor) -> Tensor | None:
    """The last feature maps (N, C, H, W), H and W > 1, that a pass of `model` on `inputs` produces: a regressor's
    maps before its global pooling (or its dense head); None for a model with none (the MLPs)."""
    captured: list[Tensor] = []

    def keep(module, args, output):
        if torch.is_tensor(output) and output.dim() == 4 and output.shape[-1] > 1:
            captured[:] = [output]

    # AddCoords only extends the input: its output is no feature map
    handles = [m.register_forward_hook(keep) for m in model.modules()
               if m is not model and not isinstance(m, AddCoords)]
    try:
        predict(model, inputs, len(inputs))
    finally:
        for handle in handles:
            handle.remove()
    return captured[0].float() if captured else None


def centre_maps(model: nn.Module, inputs: Tensor) -> Tensor | None:
    """The renderer's centre map (N, H, W) (the softmax its paint convs take), read by a forward pre-hook on the
    first of them (channel 0: any coordinate channels come after it); None for a model that is no CoordConv
    renderer."""
    renderer = next((m for m in model.modules() if isinstance(m, CoordConvRenderer)), None)
    if renderer is None:
        return None
    captured: list[Tensor] = []
    first = next(layer for layer in renderer.paint if isinstance(layer, nn.Conv2d))
    handle = first.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        predict(model, inputs, len(inputs))
    finally:
        handle.remove()
    return torch.cat(captured)[:, 0].float()


def crop_around(image: np.ndarray, x: int, y: int, radius: int) -> np.ndarray:
    """The (2r+1, 2r+1) window of `image` (H, W) centred on column x, row y; NaN where it leaves the canvas."""
    padded = np.pad(image.astype(float), radius, constant_values=np.nan)
    return padded[y:y + 2 * radius + 1, x:x + 2 * radius + 1]


def softmax_crops(logits: Tensor, centres: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The softmax over each example's canvas of `logits` (k, H, W), cropped to the (2r+1)-square centred on its
    target centre (column x, row y of `centres`, (k, 2)): (k, 2r+1, 2r+1), and the probability at the target (k,)."""
    probabilities = torch.softmax(logits.float().flatten(1), dim=1).view_as(logits).cpu().numpy()
    crops = np.stack([crop_around(p, x, y, radius) for p, (x, y) in zip(probabilities, centres)])
    return crops, crops[:, radius, radius]


# --- figures -------------------------------------------------------------------------------------------------

def bare(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])


def xy(centre) -> str:
    """A centre as '(x, y)'."""
    return f"({int(centre[0])}, {int(centre[1])})"


def parameter_figure(history: dict[str, list[tuple[int, np.ndarray, np.ndarray]]]) -> Figure:
    """Each parameter tensor's histogram at every evaluation, a row per layer (weight | bias), coloured from the
    first evaluation (dark) to the last (yellow). `history` maps a parameter name to (epoch, edges, counts)."""
    layers = list(dict.fromkeys(name.rpartition(".")[0] for name in history))
    kinds = list(dict.fromkeys(name.rpartition(".")[2] for name in history))
    width, height = 4.2 * len(kinds), 1.7 * len(layers) + 0.8
    fig, axes = plt.subplots(len(layers), len(kinds), figsize=(width, height), squeeze=False)
    # margins in inches, set once: a constrained layout's solve was half of this many-axes figure's drawing time
    fig.subplots_adjust(left=0.35 / width, right=1 - 0.15 / width, bottom=0.3 / height, top=1 - 0.8 / height,
                        hspace=0.55, wspace=0.12)
    for row, layer in enumerate(layers):
        for col, kind in enumerate(kinds):
            ax, entries = axes[row, col], history.get(f"{layer}.{kind}" if layer else kind, [])
            if not entries:
                ax.set_axis_off()
                continue
            epochs = [epoch for epoch, _, _ in entries]
            span = max(max(epochs) - min(epochs), 1)
            for epoch, edges, counts in entries:
                last = epoch == max(epochs)
                ax.stairs(counts, edges, color=cm.viridis((epoch - min(epochs)) / span), lw=1.2 if last else 0.8)
            ax.set_title(f"{layer}.{kind} (epochs {min(epochs)}..{max(epochs)})" if layer else kind, fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle("parameter histograms over training: dark = first evaluation, yellow = last", fontsize=10,
                 y=1 - 0.15 / height, va="top")
    return fig


def channels_figure(channels: np.ndarray, names: list[str], centre: np.ndarray, part: str) -> Figure:
    """An example's input channels side by side (C, H, W), each on its own colour scale, the centre marked."""
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3), squeeze=False, layout="constrained")
    for ax, image, name in zip(axes[0], channels, names):
        shown = ax.imshow(image, cmap="viridis", interpolation="nearest")
        ax.plot(*centre, "+", color="red", ms=8)
        ax.set_title(name, fontsize=9)
        bare(ax)
        fig.colorbar(shown, ax=ax, shrink=0.7)
    fig.suptitle(f"the input and its coordinate channels: {part} example at (x, y) = {xy(centre)}", fontsize=10)
    return fig


def maps_figure(maps: dict[str, np.ndarray], centres: dict[str, np.ndarray], canvas: int, title: str) -> Figure:
    """One column per example (train red, test blue), a row per channel (at most MAX_CHANNELS): each map on its own
    colour scale, its maximum marked (x); the target centre circled where the map has the canvas's size."""
    columns = [(part, i) for part in ("train", "test") for i in range(len(maps[part]))]
    n_channels = min(maps["train"].shape[1], MAX_CHANNELS)
    fig, axes = plt.subplots(n_channels, len(columns), figsize=(2.1 * len(columns), 2.1 * n_channels + 0.5),
                             squeeze=False, layout="constrained")
    for col, (part, i) in enumerate(columns):
        colour = TRAIN_COLOUR if part == "train" else TEST_COLOUR
        for c in range(n_channels):
            ax, image = axes[c, col], maps[part][i, c]
            ax.imshow(image, cmap="magma", interpolation="nearest")
            peak_y, peak_x = np.unravel_index(np.argmax(image), image.shape)
            ax.plot(peak_x, peak_y, "x", color="cyan", ms=7)
            if image.shape[-1] == canvas:
                ax.plot(*centres[part][i], "o", mfc="none", color=colour, ms=9)
            bare(ax)
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=2)
            if c == 0:
                ax.set_title(f"{part} {xy(centres[part][i])}", color=colour, fontsize=9)
            if col == 0 and n_channels > 1:
                ax.set_ylabel(f"channel {c}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def softmax_crop_figure(crops: dict[str, np.ndarray], centres: dict[str, np.ndarray],
                        target_probability: dict[str, np.ndarray], radius: int) -> Figure:
    """The paper's Figure 5: the softmax over pixels in a window centred on the target (outlined), train examples
    on the top row, test on the bottom, one colour scale for all; grey where the window leaves the canvas."""
    columns = max(len(crops["train"]), len(crops["test"]))
    width, height = 2.4 * columns + 0.8, 5
    fig, axes = plt.subplots(2, columns, figsize=(width, height), squeeze=False)
    # margins in inches, set once: a constrained layout's solve was half of this figure's drawing time
    right = 1 - 1.0 / width  # room for the colour bar
    fig.subplots_adjust(left=0.4 / width, right=right, bottom=0.35 / height, top=1 - 0.95 / height,
                        hspace=0.55, wspace=0.35)
    top = max(float(np.nanmax(crops[part])) for part in crops if len(crops[part])) or 1.0
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    shown = None
    for row, part in enumerate(("train", "test")):
        colour = TRAIN_COLOUR if part == "train" else TEST_COLOUR
        for col in range(columns):
            ax = axes[row, col]
            if col >= len(crops[part]):
                ax.set_axis_off()
                continue
            shown = ax.imshow(crops[part][col], cmap=cmap, vmin=0, vmax=top, interpolation="nearest",
                              extent=(-radius - 0.5, radius + 0.5, radius + 0.5, -radius - 0.5))
            ax.add_patch(Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
            ax.set_title(f"{part} {xy(centres[part][col])}\np(target) = {target_probability[part][col]:.3f}",
                         color=colour, fontsize=8)
            ax.set_xticks([-radius, 0, radius]), ax.set_yticks([-radius, 0, radius])
            ax.tick_params(labelsize=7)
    if shown is not None:
        fig.colorbar(shown, cax=fig.add_axes((right + 0.25 / width, 0.15, 0.12 / width, 0.6)),
                     label="softmax probability")
    fig.suptitle("softmax around the target pixel (outlined), offsets in pixels", fontsize=10, y=1 - 0.15 / height,
                 va="top")
    return fig


def inside_figures(model: nn.Module, task, data, evaluation, examples: int,
                   parameter_history: dict[str, list[tuple[int, np.ndarray, np.ndarray]]]) -> dict[str, Figure]:
    """The figures that look inside a finished run, by file name: `parameters` (when histograms were logged),
    `input_channels` (image input or coordinate channels), `maps_before_pooling` (regressors with feature maps),
    `centre_map` (the CoordConv renderer), `softmax_crop` (classification)."""
    figures = {}
    if parameter_history:
        figures["parameters"] = parameter_figure(parameter_history)
    shown = {part: torch.as_tensor(spread(idx.cpu().numpy(), max(examples, 1)), device=idx.device)
             for part, idx in (("train", data.train_idx), ("test", data.test_idx))}
    centres = {part: data.centres[idx].cpu().numpy() for part, idx in shown.items()}
    first = int(shown["train"][0])
    seen = first_layer_input(model, data.inputs[first:first + 1], task.canvas)
    if seen is not None:
        channels, names = seen
        figures["input_channels"] = channels_figure(channels[0].float().cpu().numpy(), names, centres["train"][0],
                                                    "train")
    if task.name == "regression":
        maps = {part: maps_before_pooling(model, data.inputs[idx]) for part, idx in shown.items()}
        if maps["train"] is not None:
            figures["maps_before_pooling"] = maps_figure(
                {part: m.cpu().numpy() for part, m in maps.items()}, centres, task.canvas,
                "the regressor's maps before the pooling: maximum x, target circled")
    if task.name == "rendering":
        maps = {part: centre_maps(model, data.inputs[idx]) for part, idx in shown.items()}
        if maps["train"] is not None:
            figures["centre_map"] = maps_figure(
                {part: m[:, None].cpu().numpy() for part, m in maps.items()}, centres, task.canvas,
                "the renderer's centre map (softmax over the canvas): maximum x, target circled")
    if task.name == "classification":
        crops, at_target = {}, {}
        for part, idx in shown.items():
            crops[part], at_target[part] = softmax_crops(evaluation.outputs[idx], centres[part], CROP_RADIUS)
        figures["softmax_crop"] = softmax_crop_figure(crops, centres, at_target, CROP_RADIUS)
    return figures
