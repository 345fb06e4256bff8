"""Optimizer and learning-rate schedule, built from the `optimizer` and `schedule` configs."""
from __future__ import annotations

import math

import hydra.utils
import torch
from omegaconf import DictConfig
from torch import nn



def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by `cfg._target_`; weight decay applies to kernels only, as the paper's L2 penalty."""
    params = [p for p in model.parameters() if p.requires_grad]
    kernels = [p for p in params if p.ndim > 1]
    others = [p for p in params if p.ndim <= 1]  # biases and norm scales: never decayed
    groups = [{"params": kernels}, {"params": others, "weight_decay": 0.0}]
    return hydra.utils.instantiate(cfg, _convert_="all", _partial_=True)(groups)


def lr_factor(cfg: DictConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if cfg.name == "step":
        return cfg.gamma ** (step // (cfg.every * steps_per_epoch))
    if cfg.name == "cosine":
        progress = step / max(total_steps - 1, 1)
        return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    """Set every parameter group's learning rate to base_lr * factor."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
