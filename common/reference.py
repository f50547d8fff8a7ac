"""The float64 numpy forward of any spec: the oracle every framework is measured against.

Plain on purpose: each layer is its definition, written once, with the spec's explicit padding.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .geometry import adaptive_pool_matrix
from .layers import LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, Layer, MaxPool, ReLU
from .spec import Spec


def _windows(x: np.ndarray, layer: Conv | MaxPool, fill: float) -> np.ndarray:
    """(N, C, OH, OW, k, k) view of the padded input's windows."""
    (top, bottom), (left, right) = layer.padding
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    s = layer.stride
    return sliding_window_view(x, (layer.kernel, layer.kernel), axis=(2, 3))[:, :, ::s, ::s]


def conv(x, weight, bias, layer: Conv):
    win = _windows(x, layer, 0.0)
    cin, cout = weight.shape[1], weight.shape[0] // layer.groups
    outs = [np.tensordot(win[:, g * cin:(g + 1) * cin], weight[g * cout:(g + 1) * cout], axes=([1, 4, 5], [1, 2, 3]))
            for g in range(layer.groups)]  # each (N, OH, OW, cout)
    return np.concatenate(outs, axis=-1).transpose(0, 3, 1, 2) + bias[None, :, None, None]


def max_pool(x, layer: MaxPool):
    return _windows(x, layer, -np.inf).max(axis=(4, 5))


def channel_window_sum(t, size: int, before: int):
    """out_c = sum of t_j for j in [c - before, c - before + size), channels outside [0, N) counting 0.
    LRN's forward sums over [c - size//2, ...]; its backward sums the mirrored window."""
    t = np.pad(t, ((0, 0), (before, size - 1 - before), (0, 0), (0, 0)))
    csum = np.concatenate([np.zeros_like(t[:, :1]), np.cumsum(t, axis=1)], axis=1)
    return csum[:, size:] - csum[:, :-size]


def lrn_denominator(x, layer: LRN):
    """k + scale * sum of a_j^2 over the size channels centred on c."""
    return layer.k + layer.scale * channel_window_sum(x * x, layer.size, layer.size // 2)


def lrn(x, layer: LRN):
    """b_c = a_c / (k + scale * sum of a_j^2 over the size channels centred on c) ** beta."""
    return x / lrn_denominator(x, layer) ** layer.beta


def adaptive_avg_pool(x, layer: AdaptiveAvgPool):
    mh = adaptive_pool_matrix(x.shape[2], layer.output_size, np.float64)
    mw = adaptive_pool_matrix(x.shape[3], layer.output_size, np.float64)
    return np.einsum("oh,nchw,pw->ncop", mh, x, mw)


def apply_layer(layer: Layer, x: np.ndarray, weights: dict) -> np.ndarray:
    if isinstance(layer, Conv):
        return conv(x, weights[f"{layer.name}.weight"], weights[f"{layer.name}.bias"], layer)
    if isinstance(layer, Dense):
        return x @ weights[f"{layer.name}.weight"].T + weights[f"{layer.name}.bias"]
    if isinstance(layer, ReLU):
        return np.maximum(x, 0.0)
    if isinstance(layer, LRN):
        return lrn(x, layer)
    if isinstance(layer, MaxPool):
        return max_pool(x, layer)
    if isinstance(layer, AdaptiveAvgPool):
        return adaptive_avg_pool(x, layer)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, Dropout):
        return x  # inference
    raise TypeError(f"no reference for layer kind {layer.kind!r}")


def reference_forward(spec: Spec, weights: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every named activation, in float64, for an NCHW batch x (eval mode: dropout is the identity)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1:] != spec.input_shape:
        raise ValueError(f"input has shape {x.shape}; {spec.describe()} takes (N, {', '.join(map(str, spec.input_shape))}) NCHW")
    spec.check_weights(weights)
    w64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    acts = {}
    for layer in spec.layers:
        x = apply_layer(layer, x, w64)
        acts[layer.name] = x
    return acts
