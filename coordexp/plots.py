"""Figures a person would rather look at than read: positions, painted images, per-position success."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from coordexp.rundir import atomic_write  # noqa: E402

TRAIN_COLOUR, TEST_COLOUR = "tab:red", "tab:blue"


def position_scatter(true: dict[str, np.ndarray], pred: dict[str, np.ndarray], canvas: int) -> Figure:
    """Two panels, true positions | predicted positions, train in red and test in blue.

    `true` and `pred` map "train" and "test" to (N, 2) arrays of (x, y) in pixels.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3), sharex=True, sharey=True, layout="constrained")
    for ax, points, title in ((axes[0], true, "true positions"), (axes[1], pred, "predicted positions")):
        for part, colour in (("train", TRAIN_COLOUR), ("test", TEST_COLOUR)):
            xy = points[part]
            ax.scatter(xy[:, 0], xy[:, 1], s=3, c=colour, label=f"{part} ({len(xy)})", alpha=0.7, linewidths=0)
        ax.set(title=title, xlim=(0, canvas), ylim=(canvas, 0), xlabel="x", aspect="equal")
    axes[0].set_ylabel("y")
    axes[0].legend(loc="lower left", markerscale=4)
    return fig


def image_pairs(targets: dict[str, np.ndarray], preds: dict[str, np.ndarray], pred_label: str) -> Figure:
    """Predicted images beside their targets, one column pair per example, train examples then test.

    `targets` and `preds` map "train" and "test" to (k, H, W) arrays.
    """
    columns = [(part, i) for part in ("train", "test") for i in range(len(targets[part]))]
    fig, axes = plt.subplots(2, len(columns), figsize=(1.9 * len(columns), 4), squeeze=False, layout="constrained")
    for col, (part, i) in enumerate(columns):
        colour = TRAIN_COLOUR if part == "train" else TEST_COLOUR
        for row, (images, label) in enumerate(((targets, "target"), (preds, pred_label))):
            ax = axes[row, col]
            ax.imshow(images[part][i], cmap="gray", vmin=0, vmax=max(float(images[part][i].max()), 1e-6))
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=2)
            if row == 0:
                ax.set_title(f"{part} {i}", color=colour, fontsize=9)
            if col == 0:
                ax.set_ylabel(label)
    return fig


def success_map(centres: np.ndarray, values: np.ndarray, is_test: np.ndarray, metric: str,
                higher_is_better: bool) -> Figure:
    """A map over all square centres of one per-example metric; test positions are outlined in blue.

    `centres` is (N, 2) integer (x, y); `values` and `is_test` are (N,). The held-out quarter of the
    quarter split shows at a glance as the outlined corner.
    """
    x0, y0 = centres.min(axis=0)
    width, height = centres.max(axis=0) - (x0, y0) + 1
    grid = np.full((height, width), np.nan)
    test = np.zeros((height, width), dtype=bool)
    grid[centres[:, 1] - y0, centres[:, 0] - x0] = values
    test[centres[:, 1] - y0, centres[:, 0] - x0] = is_test
    extent = (x0 - 0.5, x0 + width - 0.5, y0 + height - 0.5, y0 - 0.5)
    fig, ax = plt.subplots(figsize=(6.4, 5.3), layout="constrained")
    cmap = "RdYlGn" if higher_is_better else "RdYlGn_r"
    image = ax.imshow(grid, cmap=cmap, extent=extent, interpolation="nearest", vmin=0,
                      vmax=1 if higher_is_better else max(float(np.nanpercentile(values, 99)), 1.0))
    # pad the mask so the outline closes along the canvas edge too
    padded = np.pad(test, 1).astype(float)
    ys, xs = np.mgrid[y0 - 1:y0 + height + 1, x0 - 1:x0 + width + 1]
    ax.contour(xs, ys, padded, levels=[0.5], colors=TEST_COLOUR, linewidths=2)
    ax.set(title=f"{metric} per square centre (test outlined in blue)", xlabel="x", ylabel="y",
           xlim=extent[:2], ylim=extent[2:])
    fig.colorbar(image, ax=ax, label=metric)
    return fig


def render(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Draw `fig` once and close it; its pixels as an (H, W, 4) uint8 RGBA array, for a PNG and TensorBoard alike
    (drawing is most of a figure's cost: a run's plots are drawn once, not once per destination)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return image


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write rendered pixels (coordexp.plots.render) as a PNG atomically."""
    atomic_write(path, lambda f: matplotlib.image.imsave(f, image, format="png"))


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save `fig` as a PNG atomically and close it."""
    save_png(render(fig), path)


def spread(indices: np.ndarray, k: int) -> np.ndarray:
    """k indices spread evenly over `indices` (all of them when there are fewer)."""
    if len(indices) <= k:
        return indices
    return indices[np.linspace(0, len(indices) - 1, k).round().astype(int)]


def final_figures(task, data, evaluation, examples: int) -> dict[str, Figure]:
    """The figures of a finished run, by file name: the success map for every task, then the position
    scatter (regression) or predicted images beside targets (classification, rendering)."""
    centres = data.centres.cpu().numpy()
    is_test = np.zeros(len(centres), dtype=bool)
    is_test[data.test_idx.cpu().numpy()] = True
    values = evaluation.per_example[task.headline].cpu().numpy()
    figures = {"success_map": success_map(centres, values, is_test, task.headline, task.higher_is_better)}
    parts = {"train": data.train_idx.cpu().numpy(), "test": data.test_idx.cpu().numpy()}
    if task.name == "regression":
        pred = task.pixels(task.predictions(evaluation.outputs)).cpu().numpy()
        figures["positions"] = position_scatter({p: centres[i] for p, i in parts.items()},
                                                {p: pred[i] for p, i in parts.items()}, task.canvas)
    elif examples > 0:
        shown = {p: spread(i, examples) for p, i in parts.items()}
        targets, preds = task.pictures(evaluation.outputs, data.targets)
        figures["examples"] = image_pairs({p: targets[i].cpu().numpy() for p, i in shown.items()},
                                          {p: preds[i].cpu().numpy() for p, i in shown.items()}, task.picture_label)
    return figures
