"""TensorBoard logging of one run: scalars per epoch, figures, and the HParams dashboard entry.

The hparams summaries are written into the run's own event file (not `add_hparams`, which opens a
stray sub-run), so every run shows up once with its config and final metrics.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
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


class RunLog:
    """A SummaryWriter on the run directory with the few calls the training loop needs.

    A resumed run passes `resumed_at` (epochs completed): TensorBoard then drops anything an earlier
    session logged after that epoch, so curves continue without duplicated steps.
    """

    def __init__(self, run_dir: Path, cfg: DictConfig, metric_names: list[str], resumed_at: int | None = None):
        purge_step = None if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        exp, ssi, self.session_end = hparams(flat_hparams(cfg), {name: 0.0 for name in metric_names})
        if resumed_at is None:  # the first session already registered the run's hyperparameters
            self.writer.file_writer.add_summary(exp)
            self.writer.file_writer.add_summary(ssi)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def figure(self, tag: str, fig: Figure, step: int) -> None:
        self.writer.add_figure(tag, fig, step, close=False)

    def close(self) -> None:
        """End the HParams session and flush everything to disk."""
        self.writer.file_writer.add_summary(self.session_end)
        self.writer.close()
