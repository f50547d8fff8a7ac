"""Padding and output-size arithmetic: every rounding rule resolved to explicit (before, after) pads.

Frameworks then run a VALID (floor) convolution or pooling on the explicitly padded input, and
floor((in + before + after - k) / s) + 1 equals the output size the rule asks for.
"""
from __future__ import annotations

import math

import numpy as np


def resolve_1d(size: int, kernel: int, stride: int, pad: int, rounding: str) -> tuple[int, int, int]:
    """(before, after, out) for one spatial axis. Raises ValueError when no window fits."""
    if rounding == "same":  # TensorFlow: out = ceil(in/s); the odd pixel of padding goes after
        out = -(-size // stride)
        total = max(0, (out - 1) * stride + kernel - size)
        before, after = total // 2, total - total // 2
    elif rounding == "floor":
        before = after = pad
        if size + 2 * pad < kernel:
            raise ValueError(f"input {size} (+{2 * pad} padding) is smaller than the {kernel}-wide window")
        out = (size + 2 * pad - kernel) // stride + 1
    elif rounding == "ceil":  # Caffe's pooling and cuda-convnet: a last window may run past the edge
        if size + 2 * pad < kernel:
            raise ValueError(f"input {size} (+{2 * pad} padding) is smaller than the {kernel}-wide window")
        out = math.ceil((size + 2 * pad - kernel) / stride) + 1
        if pad > 0 and (out - 1) * stride >= size + pad:  # Caffe: the last window must start inside
            out -= 1
        before = pad
        after = (out - 1) * stride + kernel - size - before
    else:
        raise ValueError(f"unknown rounding rule {rounding!r}")
    if out < 1:
        raise ValueError(f"input {size} gives no output")
    return before, after, out


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's AdaptiveAvgPool bins: [floor(i*in/out), ceil((i+1)*in/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_pool_matrix(size: int, out: int, dtype=np.float32) -> np.ndarray:
    """(out, size) averaging matrix M with pooled = M @ x along one axis; rows sum to 1."""
    m = np.zeros((out, size), dtype=np.float64)
    for i, (start, end) in enumerate(adaptive_bins(size, out)):
        m[i, start:end] = 1.0 / (end - start)
    return m.astype(dtype)


def adaptive_pool_is_uniform(size: int, out: int) -> bool:
    """True when the bins are a plain pooling (kernel = stride = size/out), e.g. 6 -> 6 or 12 -> 6."""
    return size % out == 0
