"""The paper's training step in PyTorch: its SGD as a torch.optim.Optimizer, and one step of softmax
cross-entropy training. The rule, its multipliers and its numpy definition live in common.optim.

    opt = make_optimizer(model, lr=0.01)            # Caffe variants: biases lr x2, no decay
    loss = train_step(model, opt, x_nchw, labels)
    set_lr(opt, get_lr(opt) / 10)                    # the velocity keeps its old scale (torch.optim.SGD's would not)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alexnet_parity.common.optim import PaperSGD as PaperSGDConfig
from alexnet_parity.common.optim import multipliers

from .model import unwrap


class PaperSGD(torch.optim.Optimizer):
    """v <- momentum v - weight_decay * decay_mult * lr * lr_mult * w - lr * lr_mult * grad;  w <- w + v.

    The paper's (and Caffe's) form: the learning rate sits inside the velocity, so dropping it leaves
    the velocity as it is. torch.optim.SGD keeps v <- m v + grad + wd w and steps w <- w - lr v, which
    is the same only while lr is constant. Each param group carries `lr` (the base rate, which
    schedulers and set_lr change), `lr_mult` and `decay_mult`; the per-parameter state is "velocity",
    zero before the first step.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      lr_mult=1.0, decay_mult=1.0))

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["velocity"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            velocities = [self.velocity(p) for p in params]
            rate = group["lr"] * group["lr_mult"]
            decay = group["weight_decay"] * group["decay_mult"] * rate
            # the numpy definition's order: ((m v) - (decay w)) - (rate g), one fused pass per term
            torch._foreach_mul_(velocities, group["momentum"])
            if decay:
                torch._foreach_add_(velocities, params, alpha=-decay)
            torch._foreach_add_(velocities, grads, alpha=-rate)
            torch._foreach_add_(params, velocities)
        return loss


def make_optimizer(model: nn.Module, lr: float | None = None, cfg: PaperSGDConfig = PaperSGDConfig()) -> PaperSGD:
    """The paper's SGD over the model's parameters, one param group per (lr_mult, decay_mult) of
    common.optim.multipliers(model.spec); each group also lists its parameters' canonical `names`.
    `lr` overrides cfg.lr."""
    net = unwrap(model)
    groups: dict[tuple[float, float], dict] = {}
    mults = multipliers(net.spec)
    for name, p in net.named_parameters():
        lr_mult, decay_mult = mults[name]
        group = groups.setdefault((lr_mult, decay_mult), dict(params=[], names=[], lr_mult=lr_mult,
                                                              decay_mult=decay_mult))
        group["params"].append(p)
        group["names"].append(name)
    return PaperSGD(list(groups.values()), lr=cfg.lr if lr is None else lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay)


def set_lr(optimizer: PaperSGD, lr: float) -> None:
    """The base rate for the next steps (multipliers stay); the velocity is left as it is."""
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


def get_lr(optimizer: PaperSGD) -> float:
    return float(optimizer.param_groups[0]["lr"])


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over the batch."""
    return F.cross_entropy(logits, labels)


def _inputs(net: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(net.parameters()).device
    return (torch.as_tensor(x, dtype=torch.float32, device=device),
            torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.long, device=device))


class _training:
    """Training mode (dropout on) while inside; the model's own mode afterwards."""

    def __init__(self, net: nn.Module):
        self.net, self.was = net, net.training

    def __enter__(self):
        self.net.train()

    def __exit__(self, *exc):
        self.net.train(self.was)


def gradients(model: nn.Module, x, y) -> dict[str, np.ndarray]:
    """d(mean softmax cross-entropy)/d(each weight) for one NCHW batch in training mode, canonical names
    (torch's layout is the canonical one). The model's .grad fields are left untouched."""
    net = unwrap(model)
    x, y = _inputs(net, x, y)
    names, params = zip(*net.named_parameters())
    with _training(net), torch.enable_grad():
        grads = torch.autograd.grad(loss_fn(model(x), y), params)
    return {name: g.detach().to("cpu", torch.float32).numpy().copy() for name, g in zip(names, grads)}


def train_step(model: nn.Module, optimizer: PaperSGD, x, y) -> float:
    """One step: forward in training mode, backward, optimizer.step(). Returns the batch's loss."""
    net = unwrap(model)
    x, y = _inputs(net, x, y)
    optimizer.zero_grad(set_to_none=True)
    with _training(net), torch.enable_grad():
        loss = loss_fn(model(x), y)
        loss.backward()
    optimizer.step()
    return float(loss.detach())


def _named(optimizer: PaperSGD):
    for group in optimizer.param_groups:
        if "names" not in group:
            raise ValueError("this optimizer's param groups carry no canonical names; build it with make_optimizer")
        yield from zip(group["names"], group["params"])


def optimizer_state(optimizer: PaperSGD) -> dict[str, np.ndarray]:
    """Every parameter's velocity, canonical name -> float32 numpy (zeros before the first step)."""
    return {name: optimizer.velocity(p).detach().to("cpu", torch.float32).numpy().copy()
            for name, p in _named(optimizer)}


def load_optimizer_state(optimizer: PaperSGD, model: nn.Module, state: dict) -> None:
    """Set every velocity from a canonical dict (as optimizer_state returns); names and shapes are checked."""
    unwrap(model).spec.check_weights(state, "optimizer state")
    with torch.no_grad():
        for name, p in _named(optimizer):
            optimizer.velocity(p).copy_(torch.from_numpy(np.ascontiguousarray(state[name], dtype=np.float32)))


def apply_gradients(model: nn.Module, optimizer: PaperSGD, grads: dict) -> None:
    """One optimizer step from given canonical gradients (name -> array) instead of a backward pass."""
    for name, p in unwrap(model).named_parameters():
        p.grad = torch.from_numpy(np.array(grads[name], dtype=np.float32)).to(p.device)
    optimizer.step()
