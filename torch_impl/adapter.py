"""torch_impl's training adapter (common.engines.Adapter): what training.loop drives."""
from __future__ import annotations

import numpy as np
import torch

from alexnet_parity.common import Spec
from alexnet_parity.common.engines import Adapter
from alexnet_parity.common.optim import PaperSGD

from . import train
from .model import build_model


class TorchAdapter(Adapter):
    def __init__(self, spec: Spec, weights: dict, lr: float | None, cfg: PaperSGD):
        from alexnet_parity import torch_impl
        self.impl, self.train = torch_impl, train
        self.model = build_model(spec, weights)
        self.opt = None if lr is None else train.make_optimizer(self.model, lr, cfg)

    def train_step(self, x: np.ndarray, y: np.ndarray, dropout_seed: int) -> float:
        torch.manual_seed(dropout_seed)  # nn.Dropout draws from torch's global generator
        return self.train.train_step(self.model, self.opt, x, y)

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()
