"""One small adapter per framework, so that training.loop drives torch, Keras and Flax the same way.

Every adapter takes and gives numpy: x float32 NCHW (as training.Batches makes it; NHWC frameworks
transpose on the way in), labels int64, canonical weight and velocity dicts. It holds the native model
and the paper's SGD of its impl's train module; the framework is imported only when its adapter is built.

Dropout is seeded per step (`train_step(..., dropout_seed)`): the masks of a step are a function of the
run's seed, epoch and step, so a resumed run draws the same masks as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np

from alexnet_parity.common import Spec
from alexnet_parity.common.frameworks import FRAMEWORKS, framework_available
from alexnet_parity.common.optim import PaperSGD

available = framework_available


def check_framework(framework: str) -> str:
    """The name, when it is known and installed; else a ValueError naming --framework."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown --framework {framework!r}; choose one of: {', '.join(FRAMEWORKS)}")
    if not available(framework):
        fw = FRAMEWORKS[framework]
        raise ValueError(f"--framework {framework} needs {' and '.join(fw.requires)}: "
                         f"pip install 'alexnet-parity[{fw.extra}]'")
    return framework


def default_framework() -> str:
    """The first installed of torch, keras, flax."""
    for name in FRAMEWORKS:
        if available(name):
            return name
    raise ValueError("no framework installed: pip install 'alexnet-parity[torch]' (or [tf], [jax])")


class Adapter:
    """What every adapter shares: weights out through its impl, velocity and lr through its train module.
    A subclass sets impl, train, model and opt, and gives train_step and logits."""

    def weights(self) -> dict:
        return self.impl.export_weights(self.model)

    def velocity(self) -> dict:
        return self.train.optimizer_state(self.opt)

    def load_velocity(self, state: dict) -> None:
        self.train.load_optimizer_state(self.opt, self.model, state)

    def set_lr(self, lr: float) -> None:
        self.train.set_lr(self.opt, lr)

    def get_lr(self) -> float:
        return self.train.get_lr(self.opt)


class TorchAdapter(Adapter):
    framework = "torch"

    def __init__(self, spec: Spec, weights: dict, lr: float | None, cfg: PaperSGD):
        import torch
        from alexnet_parity import torch_impl
        from alexnet_parity.torch_impl import train as train
        self.torch, self.impl, self.train = torch, torch_impl, train
        self.model = torch_impl.build_model(spec, weights)
        self.opt = None if lr is None else train.make_optimizer(self.model, lr, cfg)

    def train_step(self, x: np.ndarray, y: np.ndarray, dropout_seed: int) -> float:
        self.torch.manual_seed(dropout_seed)  # nn.Dropout draws from torch's global generator
        return self.train.train_step(self.model, self.opt, x, y)

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(x)).numpy()



class KerasAdapter(Adapter):
    framework = "keras"

    def __init__(self, spec: Spec, weights: dict, lr: float | None, cfg: PaperSGD):
        import keras
        from alexnet_parity import tf_impl
        from alexnet_parity.tf_impl import train as train
        self.impl, self.train = tf_impl, train
        self.model = tf_impl.build_model(spec, weights)
        self.opt = None if lr is None else train.make_optimizer(self.model, lr, cfg)
        # each Dropout layer draws from its own SeedGenerator, whose state is a variable the compiled step reads
        self.seed_states = [layer.seed_generator.state for layer in self.model.layers
                            if isinstance(layer, keras.layers.Dropout)]

    def train_step(self, x: np.ndarray, y: np.ndarray, dropout_seed: int) -> float:
        for i, state in enumerate(self.seed_states):
            state.assign(np.array([dropout_seed, i], dtype=state.dtype))
        return self.train.train_step(self.model, self.opt, x.transpose(0, 2, 3, 1), y)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.model.infer(x.transpose(0, 2, 3, 1)).numpy()


class FlaxAdapter(Adapter):
    framework = "flax"

    def __init__(self, spec: Spec, weights: dict, lr: float | None, cfg: PaperSGD):
        import jax.numpy as jnp
        from alexnet_parity import jax_impl
        from alexnet_parity.jax_impl import train as train
        from flax import nnx
        self.impl, self.train, self.nnx, self.jnp = jax_impl, train, nnx, jnp
        self.model = jax_impl.build_model(spec, weights)
        self.opt = None if lr is None else train.make_optimizer(self.model, lr, cfg)
        # eval mode through the live model (jit_forward would snapshot the weights): compiled once per adapter
        self._logits = nnx.jit(lambda model, x: model(x, deterministic=True))

    def train_step(self, x: np.ndarray, y: np.ndarray, dropout_seed: int) -> float:
        return self.train.train_step(self.model, self.opt, x.transpose(0, 2, 3, 1), y,
                                     rngs=self.nnx.Rngs(dropout=dropout_seed))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._logits(self.model, self.jnp.asarray(x.transpose(0, 2, 3, 1))))


ADAPTERS = {"torch": TorchAdapter, "keras": KerasAdapter, "flax": FlaxAdapter}


def make_adapter(framework: str, spec: Spec, weights: dict, lr: float | None = 0.01, cfg: PaperSGD = PaperSGD()):
    """The framework's model built from canonical `weights`, with the paper's SGD at `lr` (None: no
    optimizer, for inference only)."""
    return ADAPTERS[check_framework(framework)](spec, weights, lr, cfg)
