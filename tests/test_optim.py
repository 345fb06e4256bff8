"""The L2 scope (which kernels weight decay reaches) and the step schedule's cap on decays."""
import pytest
import torch
from torch import nn

from coordexp.models import build_model
from coordexp.optim import build_optimizer, lr_factor
from conftest import make_cfg


def decayed_shapes(*overrides) -> tuple[list, list]:
    cfg = make_cfg(*overrides, "optimizer.weight_decay=0.002")
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas)
    decayed, plain = build_optimizer(cfg.optimizer, model, cfg.model.l2_scope).param_groups
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.002, 0.0)
    return [tuple(p.shape) for p in decayed["params"]], [tuple(p.shape) for p in plain["params"]]


def test_l2_on_conv_kernels_only_leaves_the_conv_regressors_dense_layers_alone():
    decayed, plain = decayed_shapes("task=regression", "model=conv", "model.regressor=uniform")  # the default
    assert (64, 16 * 8 * 8) in plain and (2, 64) in plain  # the authors' Dense(64), Dense(2): no L2
    assert len(decayed) == 4 and all(len(shape) == 4 for shape in decayed)
    decayed, plain = decayed_shapes("task=regression", "model=conv", "model.regressor=uniform", "model.l2_scope=all")
    assert (64, 16 * 8 * 8) in decayed and (2, 64) in decayed and all(len(shape) == 1 for shape in plain)


def test_l2_never_reaches_biases_or_norm_scales():
    decayed, plain = decayed_shapes("task=classification", "model=conv")
    assert all(len(shape) == 4 for shape in decayed) and all(len(shape) == 1 for shape in plain)
    assert len(decayed) == 6  # the six transposed convs


def test_mlp_l2_default_reaches_its_linear_kernels():
    decayed, _ = decayed_shapes("task=regression", "model=mlp", "model.hidden=8")
    assert len(decayed) == 3


def test_weight_decay_changes_only_the_kernels_in_scope():
    cfg = make_cfg("task=regression", "model=conv", "model.regressor=uniform", "optimizer.weight_decay=0.5",
                   "optimizer.lr=0.1")
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.model.l2_scope)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no loss gradient: only the decay can move a parameter
    optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    convs = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert moved == convs


@pytest.mark.parametrize("max_decays, factors", [(4, [1, 0.1, 0.01, 1e-3, 1e-4, 1e-4, 1e-4]),
                                                 (None, [1, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6])])
def test_step_schedule_stops_decaying_after_its_cap(max_decays, factors):
    cfg = make_cfg("schedule.name=step", "schedule.every=2", f"schedule.max_decays={max_decays or 'null'}").schedule
    steps_per_epoch = 3
    got = [lr_factor(cfg, epoch * steps_per_epoch, steps_per_epoch, 100) for epoch in range(0, 14, 2)]
    assert got == pytest.approx(factors)
