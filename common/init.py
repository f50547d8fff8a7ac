"""Each variant's init rule in numpy: the definition the frameworks' native inits are tested against."""
from __future__ import annotations

import math

import numpy as np

from .layers import Init
from .spec import Spec


def init_bounds(init: Init, fan_in: int, fan_out: int) -> float:
    """Half-width of the uniform rules; the same formula the framework inits use."""
    if init.kind == "fan_in_uniform":
        return 1.0 / math.sqrt(fan_in)
    if init.kind == "glorot_uniform":
        return math.sqrt(6.0 / (fan_in + fan_out))
    raise ValueError(f"{init.kind} is not a uniform rule")


def truncated_normal_std(std: float) -> float:
    """Standard deviation of N(0, std) cut at +-2 std, as TF, Keras and torch.nn.init truncate."""
    a = 2.0
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return std * math.sqrt(1 - 2 * a * pdf / mass)


def sample(init: Init, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    if init.kind == "constant":
        return np.full(shape, init.value, dtype=np.float32)
    if init.kind == "normal":
        return rng.normal(0.0, init.value, size=shape).astype(np.float32)
    if init.kind == "truncated_normal":
        out = rng.normal(0.0, 1.0, size=int(np.prod(shape)))
        bad = np.abs(out) > 2.0
        while bad.any():  # redraw, as tf.random.truncated_normal does, rather than clip
            out[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
            bad = np.abs(out) > 2.0
        return (out * init.value).reshape(shape).astype(np.float32)
    if init.kind in ("fan_in_uniform", "glorot_uniform"):
        bound = init_bounds(init, fan_in, fan_out)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)
    raise ValueError(f"unknown init rule {init.kind!r}")


def init_weights(spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical float32 weights drawn by the variant's rule. The same seed gives the same arrays."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in spec.param_layers:
        shape = layer.weight_shape
        weights[f"{layer.name}.weight"] = sample(layer.weight_init, shape, layer.fan_in, layer.fan_out, rng)
        weights[f"{layer.name}.bias"] = sample(layer.bias_init, shape[:1], layer.fan_in, layer.fan_out, rng)
    return weights
