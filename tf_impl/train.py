"""The paper's training step in Keras, on any backend: its SGD as a keras Optimizer, and one compiled step of
softmax cross-entropy training (the backend's own compiler: tf.function, jax.jit; torch runs eagerly). The rule, its multipliers and its numpy definition
live in common.optim.

    opt = make_optimizer(model, lr=0.01)            # also fine for model.compile(optimizer=opt, ...)
    loss = train_step(model, opt, x_nhwc, labels)
    set_lr(opt, get_lr(opt) / 10)                    # the velocity keeps its old scale
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import ops

from alexnet_parity.common import from_nhwc, to_nhwc
from alexnet_parity.common.optim import PaperSGD as PaperSGDConfig
from alexnet_parity.common.optim import multipliers

from . import backends
from .layers import register
from .model import _numpy, spec_of


def canonical_name(variable) -> str:
    """"conv1/kernel" -> "conv1.weight", "fc8/bias" -> "fc8.bias": a model variable's canonical name
    (a variable outside a layer keeps its path)."""
    *_, layer, part = ["", *variable.path.split("/")]
    return f"{layer}.{'weight' if part == 'kernel' else part}" if layer else part


@register
class PaperSGD(keras.optimizers.Optimizer):
    """v <- momentum v - weight_decay * decay_mult * lr * lr_mult * w - lr * lr_mult * grad;  w <- w + v.

    `weight_decay` is the paper's: an L2 term inside the velocity. Keras's own `weight_decay` argument
    means decoupled decay (w -= lr * wd * w outside the momentum) and is left off (None) on purpose.
    `multipliers` maps canonical names ("conv1.bias") to (lr_mult, decay_mult); unlisted variables
    get (1, 1). The velocity of each variable starts at zero.
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                 multipliers: dict | None = None, name: str = "paper_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        self.momentum = float(momentum)
        self.paper_weight_decay = float(weight_decay)
        self.multipliers = {str(k): (float(a), float(b)) for k, (a, b) in (multipliers or {}).items()}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.velocities = self.add_optimizer_variables(variables, "velocity")
        self._mults = tuple(self.multipliers.get(canonical_name(v), (1.0, 1.0)) for v in variables)

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        lr_mult, decay_mult = self._mults[i]
        velocity = self.velocities[i]
        rate = ops.cast(learning_rate, variable.dtype) * lr_mult
        new = self.momentum * velocity
        if decay_mult and self.paper_weight_decay:
            new = new - (self.paper_weight_decay * decay_mult) * rate * variable
        new = new - rate * ops.cast(gradient, variable.dtype)
        self.assign(velocity, new)
        self.assign_add(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.paper_weight_decay,
                      multipliers={k: list(v) for k, v in self.multipliers.items()})
        return config


def make_optimizer(model: keras.Model, lr: float | None = None, cfg: PaperSGDConfig = PaperSGDConfig()) -> PaperSGD:
    """The paper's SGD with common.optim.multipliers(model's spec), built on the model's trainable
    variables (velocities exist from the start). `lr` overrides cfg.lr."""
    optimizer = PaperSGD(learning_rate=cfg.lr if lr is None else lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, multipliers=multipliers(spec_of(model)))
    optimizer.build(model.trainable_variables)
    _models[optimizer] = weakref.ref(model)
    return optimizer


_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> its model, for canonical state


def set_lr(optimizer: PaperSGD, lr: float) -> None:
    """The base rate for the next steps (a variable: compiled steps see it without retracing)."""
    optimizer.learning_rate = float(lr)


def get_lr(optimizer: PaperSGD) -> float:
    return float(ops.convert_to_numpy(optimizer.learning_rate))


def loss_fn(logits, labels):
    """Mean softmax cross-entropy over the batch."""
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def _inputs(model, x, y):
    return (ops.convert_to_tensor(np.asarray(x), dtype=model.input.dtype),
            ops.convert_to_tensor(np.asarray(y), dtype="int32"))


def _canonical(model: keras.Model, values) -> dict[str, np.ndarray]:
    """Arrays shaped like model.trainable_variables, in canonical names and layout (common.layout's table)."""
    spec = spec_of(model)
    native = {canonical_name(v): _numpy(value, np.float32) for v, value in zip(model.trainable_variables, values)}
    return from_nhwc(spec, {layer.name: (native[f"{layer.name}.weight"], native[f"{layer.name}.bias"])
                            for layer in spec.param_layers})


def gradients(model: keras.Model, x, y) -> dict[str, np.ndarray]:
    """d(mean softmax cross-entropy)/d(each weight) for one NHWC batch in training mode, canonical
    names and layout (OIHW kernels, fc6's rows in C,H,W order)."""
    _, grads = backends.current().loss_and_gradients(model, loss_fn, *_inputs(model, x, y))
    return _canonical(model, grads)


def _compiled_step(model: keras.Model, optimizer: PaperSGD):
    """The backend's compiled step, one per (model, optimizer), kept on the optimizer."""
    cached = getattr(optimizer, "_alexnet_step", None)
    if cached is not None and cached[0]() is model:
        return cached[1]
    step = backends.current().train_step(model, optimizer, loss_fn)
    optimizer._alexnet_step = (weakref.ref(model), step)
    return step


def train_step(model: keras.Model, optimizer: PaperSGD, x, y) -> float:
    """One compiled step: forward in training mode, backward, the optimizer's update. Returns the loss."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return float(ops.convert_to_numpy(_compiled_step(model, optimizer)(*_inputs(model, x, y))))


def _model_of(optimizer: PaperSGD) -> keras.Model:
    ref = _models.get(optimizer)
    model = ref() if ref is not None else None
    if model is None:
        raise ValueError("optimizer_state needs the optimizer's model: build the optimizer with make_optimizer "
                         "(or call load_optimizer_state(optimizer, model, ...) once) and keep the model alive")
    return model


def _velocity(optimizer: PaperSGD, variable):
    return optimizer.velocities[optimizer._get_variable_index(variable)]


def optimizer_state(optimizer: PaperSGD) -> dict[str, np.ndarray]:
    """Every velocity, canonical name -> float32 numpy, canonical layout."""
    model = _model_of(optimizer)
    return _canonical(model, [_velocity(optimizer, v) for v in model.trainable_variables])


def _native(model: keras.Model, canonical: dict) -> list[np.ndarray]:
    """A canonical dict (names and shapes checked) as arrays shaped like model.trainable_variables."""
    spec = spec_of(model)
    spec.check_weights(canonical)
    native = {}
    for name, (kernel, bias) in to_nhwc(spec, canonical).items():
        native[f"{name}.weight"], native[f"{name}.bias"] = kernel, bias
    return [native[canonical_name(v)] for v in model.trainable_variables]


def load_optimizer_state(optimizer: PaperSGD, model: keras.Model, state: dict) -> None:
    """Set every velocity from a canonical dict (as optimizer_state returns; names and shapes checked)."""
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    native = _native(model, state)
    for variable, value in zip(model.trainable_variables, native):
        _velocity(optimizer, variable).assign(value)
    _models[optimizer] = weakref.ref(model)


def apply_gradients(model: keras.Model, optimizer: PaperSGD, grads: dict) -> None:
    """One optimizer step from given canonical gradients (name -> array) instead of a backward pass."""
    optimizer.apply(_native(model, grads), model.trainable_variables)
