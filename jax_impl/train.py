"""The paper's training step in Flax NNX: its SGD as an optax transformation, `paper_sgd`, wrapped in
nnx.Optimizer, and one jitted step of softmax cross-entropy training. The rule, its multipliers and
its numpy definition live in common.optim.

    opt = make_optimizer(model, lr=0.01)            # nnx.Optimizer(model, paper_sgd(...), wrt=nnx.Param)
    loss = train_step(model, opt, x_nhwc, labels)
    set_lr(opt, get_lr(opt) / 10)                    # the velocity keeps its old scale
"""
from __future__ import annotations

import functools
import secrets
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from alexnet_parity.common import Spec, from_nhwc
from alexnet_parity.common.optim import PaperSGD as PaperSGDConfig
from alexnet_parity.common.optim import multipliers

from .model import AlexNet, load_weights

Multiplier = float | Any | Callable[[Any], Any]  # a float, a pytree of floats like params, or params -> such a tree


class PaperSGDState(NamedTuple):
    learning_rate: jax.Array  # the base rate, a float32 scalar: set_lr changes it between steps without retracing
    velocity: optax.Updates


def paper_sgd(learning_rate: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
              lr_mult: Multiplier = 1.0, decay_mult: Multiplier = 1.0) -> optax.GradientTransformation:
    """v <- momentum v - weight_decay * decay_mult * lr * lr_mult * w - lr * lr_mult * grad;  w <- w + v.

    The update it returns is the new velocity v (optax.apply_updates then adds it), so it needs
    `params`. lr_mult / decay_mult are, as optax's masks are, a value, a pytree of floats shaped like
    params, or a function params -> such a tree (Caffe's biases: 2 and 0). The velocity starts at 0.
    """

    def tree(mult, params):
        mult = mult(params) if callable(mult) else mult
        return jax.tree.map(lambda _: mult, params) if isinstance(mult, (int, float)) else mult

    def init(params):
        return PaperSGDState(jnp.asarray(learning_rate, jnp.float32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("paper_sgd needs params: its weight decay goes through the velocity")
        lr = state.learning_rate

        def one(g, v, w, lr_mult, decay_mult):
            rate = (lr * lr_mult).astype(w.dtype)
            new = momentum * v
            if decay_mult and weight_decay:
                new = new - (weight_decay * decay_mult) * rate * w
            return new - rate * g

        velocity = jax.tree.map(one, grads, state.velocity, params, tree(lr_mult, params), tree(decay_mult, params))
        return velocity, PaperSGDState(lr, velocity)

    return optax.GradientTransformation(init, update)


def _canonical_name(path) -> str:
    """(conv1, kernel) -> "conv1.weight": a parameter's canonical name from its pytree path."""
    layer, part = (getattr(k, "key", getattr(k, "name", k)) for k in path[-2:])
    return f"{layer}.{'weight' if part == 'kernel' else part}"


def _multiplier_fn(spec: Spec, which: int):
    mults = multipliers(spec)
    return lambda params: jax.tree_util.tree_map_with_path(lambda path, _: mults[_canonical_name(path)][which], params)


@functools.lru_cache(maxsize=64)
def _transform(spec: Spec, momentum: float, weight_decay: float) -> optax.GradientTransformation:
    """One paper_sgd per (spec, momentum, decay): the transform is static in a jitted step's signature,
    so every optimizer made for a spec (a resumed run, a second model) reuses the compiled step."""
    return paper_sgd(0.0, momentum, weight_decay, lr_mult=_multiplier_fn(spec, 0), decay_mult=_multiplier_fn(spec, 1))


def make_optimizer(model: AlexNet, lr: float | None = None, cfg: PaperSGDConfig = PaperSGDConfig()) -> nnx.Optimizer:
    """nnx.Optimizer(model, paper_sgd(...) with common.optim.multipliers(model.spec), wrt=nnx.Param).
    `lr` overrides cfg.lr. The optimizer keeps the model's spec (optimizer.spec) to name its state."""
    optimizer = nnx.Optimizer(model, _transform(model.spec, cfg.momentum, cfg.weight_decay), wrt=nnx.Param)
    set_lr(optimizer, cfg.lr if lr is None else lr)
    optimizer.spec = model.spec
    return optimizer


def set_lr(optimizer: nnx.Optimizer, lr: float) -> None:
    """The base rate for the next steps (state, not a constant: jitted steps do not retrace)."""
    optimizer.opt_state.learning_rate.set_value(jnp.asarray(lr, jnp.float32))


def get_lr(optimizer: nnx.Optimizer) -> float:
    return float(optimizer.opt_state.learning_rate[...])


def loss_fn(logits, labels):
    """Mean softmax cross-entropy over the batch."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _dropout_rngs(model: AlexNet, rngs):
    """A fresh OS seed when the model drops anything and no rngs were given (as torch's global RNG);
    pass nnx.Rngs(dropout=seed) to reproduce."""
    if rngs is None and any(layer.kind == "dropout" and layer.rate > 0 for layer in model.spec.layers):
        rngs = nnx.Rngs(dropout=secrets.randbits(32))
    return rngs


def _loss(model: AlexNet, x, y, rngs):
    return loss_fn(model(x, deterministic=False, rngs=rngs), y)


@nnx.jit
def _gradients(model, x, y, rngs):
    return nnx.grad(_loss)(model, x, y, rngs)


@nnx.jit
def _train_step(model, optimizer, x, y, rngs):
    loss, grads = nnx.value_and_grad(_loss)(model, x, y, rngs)
    optimizer.update(model, grads)
    return loss


def _as_canonical(spec: Spec, tree) -> dict[str, np.ndarray]:
    """A pytree shaped like the model's parameters (gradients, velocities), in canonical names and
    layout (common.layout's table)."""
    pure = nnx.as_pure(tree)
    return from_nhwc(spec, {layer.name: (pure[layer.name]["kernel"], pure[layer.name]["bias"])
                            for layer in spec.param_layers})


def gradients(model: AlexNet, x, y, *, rngs=None) -> dict[str, np.ndarray]:
    """d(mean softmax cross-entropy)/d(each weight) for one NHWC batch in training mode, canonical
    names and layout (OIHW kernels, fc6's rows in C,H,W order)."""
    grads = _gradients(model, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), _dropout_rngs(model, rngs))
    return _as_canonical(model.spec, grads)


def train_step(model: AlexNet, optimizer: nnx.Optimizer, x, y, *, rngs=None) -> float:
    """One jitted step: forward in training mode, backward, the optimizer's update. Returns the loss.
    `rngs` (nnx.Rngs) draws the dropout masks; by default a fresh seed per step."""
    return float(_train_step(model, optimizer, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32),
                             _dropout_rngs(model, rngs)))


def optimizer_state(optimizer: nnx.Optimizer) -> dict[str, np.ndarray]:
    """Every velocity, canonical name -> float32 numpy, canonical layout."""
    return _as_canonical(optimizer.spec, optimizer.opt_state.velocity)


def _native(spec: Spec, canonical: dict) -> nnx.State:
    """A canonical dict (names and shapes checked) as a state of arrays shaped like the model's
    parameters, through jax_impl's own load_weights on an abstract model."""
    shell = nnx.eval_shape(lambda: AlexNet(spec, rngs=nnx.Rngs(0)))
    load_weights(shell, canonical)
    return nnx.state(shell, nnx.Param)


def load_optimizer_state(optimizer: nnx.Optimizer, model: AlexNet, state: dict) -> None:
    """Set every velocity from a canonical dict (as optimizer_state returns; names and shapes checked)."""
    native = nnx.as_pure(_native(model.spec, state))
    jax.tree.map(lambda v, value: v.set_value(value), optimizer.opt_state.velocity, native,
                 is_leaf=lambda v: isinstance(v, nnx.Variable))
    optimizer.spec = model.spec


@nnx.jit
def _apply(model, optimizer, grads):  # one compile rather than op-by-op dispatch
    optimizer.update(model, grads)


def apply_gradients(model: AlexNet, optimizer: nnx.Optimizer, grads: dict) -> None:
    """One optimizer step from given canonical gradients (name -> array) instead of a backward pass."""
    _apply(model, optimizer, _native(model.spec, grads))
