"""tf_impl's training adapter, on any Keras backend (common.engines.Adapter): what training.loop drives."""
from __future__ import annotations

import keras
import numpy as np

from alexnet_parity.common import Spec
from alexnet_parity.common.engines import Adapter
from alexnet_parity.common.optim import PaperSGD

from . import train
from .model import build_model


class KerasAdapter(Adapter):
    def __init__(self, spec: Spec, weights: dict, lr: float | None, cfg: PaperSGD):
        from alexnet_parity import tf_impl
        self.impl, self.train = tf_impl, train
        self.model = build_model(spec, weights)
        self.opt = None if lr is None else train.make_optimizer(self.model, lr, cfg)
        # each Dropout layer draws from its own SeedGenerator, whose state is a variable the compiled step reads
        self.seed_states = [layer.seed_generator.state for layer in self.model.layers
                            if isinstance(layer, keras.layers.Dropout)]

    def train_step(self, x: np.ndarray, y: np.ndarray, dropout_seed: int) -> float:
        for i, state in enumerate(self.seed_states):
            state.assign(np.array([dropout_seed, i], dtype=state.dtype))
        return self.train.train_step(self.model, self.opt, x.transpose(0, 2, 3, 1), y)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.model.infer(x.transpose(0, 2, 3, 1)))
