"""The paper's optimizer as data and as a numpy definition every framework's optimizer is tested against.

Paper, section 5: v <- 0.9 v - 0.0005 * lr * w - lr * grad;  w <- w + v.
torch.optim.SGD instead keeps v <- m v + (grad + wd w) and steps w <- w - lr v: the same while lr is constant,
but when lr drops the paper's form keeps the old velocity at the old scale and torch's rescales it at once.
Caffe's solver is the paper's form with per-parameter multipliers (bvlc_alexnet: biases lr x2, no decay).
The learning-rate rule: divide by 10 when the validation error stops improving.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import Spec


@dataclass(frozen=True)
class PaperSGD:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005


def multipliers(spec: Spec) -> dict[str, tuple[float, float]]:
    """name -> (lr_mult, decay_mult). Caffe's prototxts give biases lr_mult 2, decay_mult 0; the paper and the
    other variants use 1 and 1 everywhere."""
    caffe = spec.variant in ("caffe", "caffenet")
    out = {}
    for name in spec.weight_shapes():
        bias = name.endswith(".bias")
        out[name] = (2.0, 0.0) if caffe and bias else (1.0, 1.0)
    return out


def paper_sgd_update(w: np.ndarray, v: np.ndarray, grad: np.ndarray, lr: float, cfg: PaperSGD = PaperSGD(),
                     lr_mult: float = 1.0, decay_mult: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One step for one tensor: returns (new w, new v)."""
    rate = lr * lr_mult
    v = cfg.momentum * v - cfg.weight_decay * decay_mult * rate * w - rate * grad
    return w + v, v


@dataclass
class PlateauSchedule:
    """Divide lr by `factor` when the validation error has not improved for `patience` evaluations."""

    lr: float = 0.01
    factor: float = 10.0
    patience: int = 1
    min_lr: float = 1e-6
    best: float = float("inf")
    bad_epochs: int = 0

    def step(self, val_error: float) -> float:
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.lr, self.bad_epochs = max(self.lr / self.factor, self.min_lr), 0
        return self.lr

    def state_dict(self) -> dict:
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.best, self.bad_epochs = float(state["lr"]), float(state["best"]), int(state["bad_epochs"])
