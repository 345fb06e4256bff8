"""Checkpoints: everything needed to continue a run exactly where it stopped, written atomically."""
from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from coordexp.files import atomic_write

CHECKPOINT = "checkpoint.pt"


@dataclass
class History:
    """Per-evaluation metrics, as logged: one entry per evaluated epoch."""

    epochs: list[int] = field(default_factory=list)
    metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)


@dataclass
class TrainState:
    """Where training stands. The learning rate is a function of `step`, so it needs no state of its own."""

    epoch: int = 0                 # epochs completed
    batch: int = 0                 # next batch of the current epoch
    step: int = 0                  # optimizer steps taken
    perm: Tensor | None = None     # the current epoch's batch order, while inside an epoch
    loss_sum: Tensor | None = None  # the current epoch's summed training loss so far
    history: History = field(default_factory=History)
    wall_seconds: float = 0.0      # time of every session of this run so far, evaluations included
    train_seconds: float = 0.0     # time spent in training steps only, every session included


def rng_states(order: torch.Generator) -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
              "order": order.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, order: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    order.set_state(states["order"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, order: torch.Generator) -> None:
    """Write the checkpoint atomically: a kill during the write leaves the previous one intact."""
    payload = {"config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "state": state.__dict__ | {"history": state.history.__dict__}, "rng": rng_states(order)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialise fully first, so the file write is one short step
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def restore(checkpoint: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, order: torch.Generator,
            device: torch.device) -> TrainState:
    """Load model, optimizer and RNG states from `checkpoint`; return the training state to continue from."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_states(checkpoint["rng"], order)
    saved = dict(checkpoint["state"])
    saved["history"] = History(**saved["history"])
    state = TrainState(**saved)
    if state.perm is not None:
        state.perm, state.loss_sum = state.perm.to(device), state.loss_sum.to(device)
    return state
