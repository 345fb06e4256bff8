"""Stacks of 1x1 convolutions (per-pixel Linears) with ReLU between them, as matrix products on (rows, channels).

One autograd node for the whole stack: on the CPU each hidden layer is a single oneDNN product with the ReLU
fused in (no separate pass over the activations), and the backward is written out, masking each gradient in
place. Same parameters, same result as the layer-by-layer version up to floating-point rounding.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _linear_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [], "")
    return torch.relu_(torch.addmm(bias, x, weight.t()))


class _LinearReLUStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        inputs = [x]
        for weight, bias in zip(weights[:-1], biases[:-1]):
            inputs.append(_linear_relu(inputs[-1], weight, bias))
        ctx.save_for_backward(*inputs, *weights)
        return torch.addmm(biases[-1], inputs[-1], weights[-1].t())

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        inputs, weights = saved[:len(saved) // 2], saved[len(saved) // 2:]
        grads: list[Tensor] = []
        for i in reversed(range(len(weights))):
            grads = [grad.t() @ inputs[i], grad.sum(0)] + grads
            grad = grad @ weights[i]
            if i > 0:  # the layer's input came out of a ReLU; masked in place, while `grad` is still in cache
                torch.ops.aten.threshold_backward.grad_input(grad, inputs[i], 0, grad_input=grad)
        return (grad, *grads)


def linear_relu_stack(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """x (..., C) through Linear layers `weights[i]` (out, in) + `biases[i]`, ReLU between them (none after
    the last), as one fused autograd node. Parameters are cast to x's dtype (bf16 under autocast)."""
    params = [p.to(x.dtype) for pair in zip(weights, biases) for p in pair]
    out = _LinearReLUStack.apply(x.reshape(-1, x.shape[-1]), *params)
    return out.view(*x.shape[:-1], out.shape[-1])
