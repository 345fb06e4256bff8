"""Looking inside (coordexp.inside): each figure of a shrunk run of each task, the parameter histograms in
TensorBoard, and the paper's Figure 5 crop centred on the target."""
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from coordexp.inside import crop_around, softmax_crops
from coordexp.run import train
from conftest import make_cfg

SHRUNK = ["debug=fast", "data.canvas=32", "trainer.epochs=2"]
RESULTS = {"regression": {"success_map", "positions"}, "classification": {"success_map", "examples"},
           "rendering": {"success_map", "examples"}}
INSIDE = {  # (task, model): the figures that look inside it
    ("regression", "coordconv"): {"parameters", "input_channels", "maps_before_pooling"},
    ("regression", "conv"): {"parameters", "input_channels", "maps_before_pooling"},
    ("classification", "coordconv"): {"parameters", "input_channels", "softmax_crop"},
    ("classification", "conv"): {"parameters", "softmax_crop"},  # the deconv painter takes (x, y): no image input
    ("rendering", "coordconv"): {"parameters", "input_channels", "centre_map"},
}


@pytest.mark.parametrize("task, model", INSIDE)
def test_each_figure_is_written_and_logged(tmp_path, task, model):
    metrics = train(make_cfg(f"task={task}", f"model={model}", *SHRUNK), tmp_path)
    expected = RESULTS[task] | INSIDE[(task, model)]
    assert {p.stem for p in (tmp_path / "plots").iterdir()} == expected
    assert set(metrics["outputs"]) == {"checkpoint.pt", *(f"plots/{name}.png" for name in expected)}
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    assert {f"plots/{name}" for name in expected} <= set(events.Tags()["images"])
    # a histogram of every parameter tensor, at initialisation and at each evaluation
    model_params = [name for name in torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
                    if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    histograms = [tag for tag in events.Tags()["histograms"] if tag.startswith("parameters/")]
    assert sorted(histograms) == sorted(f"parameters/{name}" for name in model_params)
    assert [e.step for e in events.Histograms(histograms[0])] == [0, *metrics["history"]["epochs"]]


def test_plots_false_writes_no_figure_and_no_histogram(tmp_path):
    metrics = train(make_cfg("task=regression", "model=coordconv", *SHRUNK, "trainer.plots=false"), tmp_path)
    assert not (tmp_path / "plots").exists() and metrics["outputs"] == ["checkpoint.pt"]
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["histograms"] == []


def test_the_softmax_crop_is_centred_on_the_target():
    canvas, radius = 16, 3
    centres = np.array([[5, 9], [0, 15], [13, 2]])  # x != y, and at the canvas's edges
    logits = torch.zeros(len(centres), canvas, canvas)
    for k, (x, y) in enumerate(centres):
        logits[k, y, x] = 8.0  # the target
        logits[k, y, x + 1] = 4.0  # its right-hand neighbour
    probabilities = torch.softmax(logits.flatten(1), 1).view_as(logits).numpy()
    crops, at_target = softmax_crops(logits, centres, radius)
    assert crops.shape == (3, 2 * radius + 1, 2 * radius + 1)
    for k, (x, y) in enumerate(centres):
        assert np.nanargmax(crops[k]) == radius * (2 * radius + 1) + radius  # the target is the crop's centre
        assert crops[k, radius, radius + 1] == probabilities[k, y, x + 1]  # right of centre is right of the target
        assert at_target[k] == probabilities[k, y, x]
    # outside the canvas the window is blank: x = 0 leaves 3 blank columns on the left, y = 15 three rows below
    assert np.isnan(crops[1][:, :radius]).all() and np.isnan(crops[1][radius + 1:]).all()
    assert not np.isnan(crops[1][:radius + 1, radius:]).any()


def test_crop_around_reads_x_as_the_column_and_y_as_the_row():
    image = np.arange(6 * 8, dtype=float).reshape(6, 8)  # 6 rows, 8 columns
    crop = crop_around(image, x=7, y=0, radius=1)
    assert crop[1, 1] == image[0, 7]
    assert np.array_equal(crop[1:, :2], image[0:2, 6:8])
    assert np.isnan(crop[0]).all() and np.isnan(crop[:, 2]).all()  # above row 0, right of column 7
