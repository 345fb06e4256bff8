"""TensorBoard logging of one run: scalars per epoch, figures, and the HParams dashboard entry.

The hparams summaries are written into the run's own event file (not `add_hparams`, which opens a
stray sub-run), so every run shows up once with its config and final metrics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


def flat_hparams(cfg: DictConfig) -> dict[str, float | int | str | bool]:
    """The config as dotted keys with scalar values (lists become strings), as HParams expects."""
    flat: dict[str, float | int | str | bool] = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            elif isinstance(value, (bool, int, float, str)):
                flat[name] = value
            else:
                flat[name] = str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


PARAMETERS = "parameters"  # the tag prefix of the parameter histograms
HISTOGRAM_BINS = 48  # equal-width bins between a tensor's min and max


class RunLog:
    """A SummaryWriter on the run directory with the few calls the training loop needs.

    A resumed run passes `resumed_at` (epochs completed): TensorBoard then drops anything an earlier
    session logged after that epoch, so curves continue without duplicated steps.
    """

    def __init__(self, run_dir: Path, cfg: DictConfig, metric_names: list[str], resumed_at: int | None = None,
                 resolved: dict[str, str] | None = None):
        purge_step = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        # `resolved`: what the run decided at start-up beside its config (the precision auto chose), as columns
        exp, ssi, self.session_end = hparams({**flat_hparams(cfg), **(resolved or {})},
                                             {name: 0.0 for name in metric_names})
        if resumed_at is None:  # the first session already registered the run's hyperparameters
            self.writer.file_writer.add_summary(exp)
            self.writer.file_writer.add_summary(ssi)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def parameter_histograms(self, model: nn.Module, step: int) -> None:
        """A histogram of every parameter tensor of `model`, tagged parameters/<name> (called at evaluations)."""
        for name, parameter in model.named_parameters():
            values = parameter.detach().float().cpu()
            self.writer.add_histogram(f"{PARAMETERS}/{name}", values, step, bins=HISTOGRAM_BINS)

    def parameter_history(self) -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
        """Every parameter histogram this run logged, every session's, as {name: [(step, edges, counts), ...]},
        read back from the event files (what a resumed session purged is gone, as TensorBoard shows it)."""
        # imported here: TensorBoard's event reader (~0.15 s) loads only in a run that draws its histograms
        from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, EventAccumulator
        self.writer.flush()
        events = EventAccumulator(self.writer.get_logdir(), size_guidance={HISTOGRAMS: 0})
        events.Reload()
        history = {}
        for tag in events.Tags()[HISTOGRAMS]:
            if tag.startswith(f"{PARAMETERS}/"):
                history[tag.removeprefix(f"{PARAMETERS}/")] = [
                    # bucket i spans (limit[i-1], limit[i]]; bucket 0 is the empty one that carries the left edge
                    (e.step, np.array(e.histogram_value.bucket_limit), np.array(e.histogram_value.bucket[1:]))
                    for e in events.Histograms(tag)]
        return history

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log rendered pixels, (H, W, 3 or 4) uint8 (coordexp.plots.render), as an RGB image."""
        self.writer.add_image(tag, image[..., :3], step, dataformats="HWC")

    def close(self) -> None:
        """End the HParams session and flush everything to disk."""
        self.writer.file_writer.add_summary(self.session_end)
        self.writer.close()
