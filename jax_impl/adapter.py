"""jax_impl's training adapter (common.engines.Adapter): what training.loop drives."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from alexnet_parity.common import Spec
from alexnet_parity.common.engines import Adapter
from alexnet_parity.common.optim import PaperSGD

from . import train
from .model import build_model


class FlaxAdapter(Adapter):
    def __init__(self, spec: Spec, weights: dict, lr: float | None, cfg: PaperSGD):
        from alexnet_parity import jax_impl
        self.impl, self.train = jax_impl, train
        self.model = build_model(spec, weights)
        self.opt = None if lr is None else train.make_optimizer(self.model, lr, cfg)
        # eval mode through the live model (jit_forward would snapshot the weights): compiled once per adapter
        self._logits = nnx.jit(lambda model, x: model(x, deterministic=True))

    def train_step(self, x: np.ndarray, y: np.ndarray, dropout_seed: int) -> float:
        return self.train.train_step(self.model, self.opt, x.transpose(0, 2, 3, 1), y,
                                     rngs=nnx.Rngs(dropout=dropout_seed))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._logits(self.model, jnp.asarray(x.transpose(0, 2, 3, 1))))
