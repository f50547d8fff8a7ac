"""NCHW (canonical) <-> NHWC (Keras, Flax): the transposes, and fc6's row order, in one place.

Every helper returns a C-contiguous copy: safetensors 0.8 writes a transposed view's memory, not its
values, without an error, so a view escaping into a checkpoint corrupts it silently.

The one line most hand-made AlexNet ports get wrong: an NHWC flatten orders fc6's inputs H,W,C, the
canonical weights order them C,H,W, so the dense kernel's rows must be permuted, not just transposed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .spec import Spec


def fc_rows_chw_to_hwc(weight: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Canonical dense weight (out, C*H*W) -> (H*W*C, out): the kernel an NHWC flatten needs."""
    c, h, w = chw
    out = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out))


def fc_rows_hwc_to_chw(kernel: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Inverse of fc_rows_chw_to_hwc: an NHWC (H*W*C, out) kernel -> canonical (out, C*H*W)."""
    c, h, w = chw
    out = kernel.shape[1]
    return np.ascontiguousarray(kernel.reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w))


def conv_oihw_to_hwio(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def conv_hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def nhwc_flatten_chw(spec: Spec) -> dict[str, tuple[int, int, int]]:
    """{dense name: (C, H, W)} for the dense layer that reads the flattened map (fc6): the one whose rows an
    NHWC flatten orders H,W,C. Empty without a classifier."""
    names = [layer.name for layer in spec.layers]
    if "flatten" not in names:
        return {}
    first_dense = next(layer for layer in spec.layers[names.index("flatten"):] if layer.kind == "dense")
    return {first_dense.name: spec.layer("flatten").in_shape}


def _transposed(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def kernel_layout(spec: Spec) -> dict[str, tuple[Callable, Callable]]:
    """The table: {parameter layer: (canonical weight -> NHWC kernel, its inverse)}. Conv kernels are HWIO
    (kh, kw, in/groups, out), dense kernels (in, out), and the dense that reads the flatten (fc6) has its rows
    in H,W,C order."""
    flat = nhwc_flatten_chw(spec)
    table = {}
    for layer in spec.param_layers:
        if layer.kind == "conv":
            table[layer.name] = (conv_oihw_to_hwio, conv_hwio_to_oihw)
        elif layer.name in flat:
            chw = flat[layer.name]
            table[layer.name] = (lambda w, chw=chw: fc_rows_chw_to_hwc(w, chw),
                                 lambda k, chw=chw: fc_rows_hwc_to_chw(k, chw))
        else:
            table[layer.name] = (_transposed, _transposed)
    return table


def to_nhwc(spec: Spec, weights: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Canonical weights -> {layer: (kernel, bias)} as an NHWC framework holds them (kernel_layout's table),
    float32 and contiguous."""
    return {name: (forward(np.asarray(weights[f"{name}.weight"], dtype=np.float32)),
                   np.ascontiguousarray(weights[f"{name}.bias"], dtype=np.float32))
            for name, (forward, _) in kernel_layout(spec).items()}


def from_nhwc(spec: Spec, params: dict) -> dict[str, np.ndarray]:
    """Exact inverse of to_nhwc: {layer: (kernel, bias)} in NHWC layout -> canonical float32 weights."""
    weights = {}
    for name, (_, inverse) in kernel_layout(spec).items():
        kernel, bias = params[name]
        weights[f"{name}.weight"] = inverse(np.asarray(kernel, dtype=np.float32))
        weights[f"{name}.bias"] = np.array(bias, dtype=np.float32)
    return weights


def canonical_shape(kernel_shape: tuple) -> tuple:
    """The canonical weight shape of an NHWC kernel's shape: HWIO -> (out, in, kh, kw), (in, out) -> (out, in).
    fc6's row permutation keeps the shape, so a file's spec can be inferred from its kernels' shapes alone."""
    k = tuple(kernel_shape)
    return (k[3], k[2], k[0], k[1]) if len(k) == 4 else tuple(reversed(k))


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))


def activation_to_nchw(spec: Spec, name: str, a: np.ndarray) -> np.ndarray:
    """An NHWC framework's activation of layer `name`, in the canonical layout the reference uses:
    4-D maps to NCHW, and the flatten output from H,W,C order to C,H,W order."""
    a = np.asarray(a)
    if a.ndim == 4:
        return a.transpose(0, 3, 1, 2)
    if _in_flatten_order(spec, name):
        c, h, w = spec.layer("flatten").in_shape
        return a.reshape(a.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(a.shape[0], -1)
    return a


def activation_from_nchw(spec: Spec, name: str, a: np.ndarray) -> np.ndarray:
    """Inverse of activation_to_nchw: a canonical activation (or its gradient) of layer `name` in an NHWC
    framework's own layout (NHWC maps, the flatten output in H,W,C order)."""
    a = np.asarray(a)
    if a.ndim == 4:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    if _in_flatten_order(spec, name):
        c, h, w = spec.layer("flatten").in_shape
        return np.ascontiguousarray(a.reshape(a.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(a.shape[0], -1))
    return a


def _in_flatten_order(spec: Spec, name: str) -> bool:
    """True for the flatten output and every layer between it and the first dense (torchvision's drop6):
    their NHWC activations are still in H,W,C order."""
    names = [layer.name for layer in spec.layers]
    if "flatten" not in names:
        return False
    start, end = names.index("flatten"), names.index(name)
    return start <= end and not any(layer.kind == "dense" for layer in spec.layers[start:end + 1])
