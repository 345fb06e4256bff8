"""Optimizer and learning-rate schedule, built from the `optimizer` and `schedule` configs."""
from __future__ import annotations

import math

import hydra.utils
import torch
from omegaconf import DictConfig
from torch import nn

from coordexp.models import CONV_LAYERS


def decayed_kernels(model: nn.Module, l2_scope: str) -> list[nn.Parameter]:
    """The kernels weight decay applies to: those of conv layers ("conv") or every kernel ("all"); never biases
    or norm scales."""
    if l2_scope == "all":
        return [p for p in model.parameters() if p.ndim > 1]
    return [m.weight for m in model.modules() if isinstance(m, CONV_LAYERS)]


def build_optimizer(cfg: DictConfig, model: nn.Module, l2_scope: str) -> torch.optim.Optimizer:
    """The optimizer named by `cfg._target_`; weight decay (the paper's L2 penalty) applies to the kernels
    `l2_scope` names, every other parameter is in a group without it."""
    params = [p for p in model.parameters() if p.requires_grad]
    decayed = {id(p) for p in decayed_kernels(model, l2_scope)}
    groups = [{"params": [p for p in params if id(p) in decayed]},
              {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0}]
    return hydra.utils.instantiate(cfg, _convert_="all", _partial_=True)(groups)


def lr_factor(cfg: DictConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based); `cfg` is the schedule's config, or
    any object with its keys as attributes."""
    if cfg.name == "step":
        decays = step // (cfg.every * steps_per_epoch)
        return cfg.gamma ** (decays if cfg.max_decays is None else min(decays, cfg.max_decays))
    if cfg.name == "cosine":
        progress = step / max(total_steps - 1, 1)
        return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    """Set every parameter group's learning rate to base_lr * factor."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
