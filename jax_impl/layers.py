"""The AlexNet layers JAX/Flax lacks or runs slowly, in NHWC, each exact to common.reference.

Every choice below was timed against the obvious alternative under XLA:CPU (jax 0.10, batch 32, the
paper's layer shapes); each keeps the canonical definition bit-for-bit or within float32 rounding.
"""
from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from alexnet_parity.common import (AdaptiveAvgPool, Conv, Init, LRN, MaxPool, adaptive_pool_is_uniform,
                                   adaptive_pool_matrix, init_bounds)

NHWC = ("NHWC", "HWIO", "NHWC")


class SplitGroupConv(nnx.Conv):
    """nnx.Conv with feature_group_count > 1, run as one convolution per group plus a concatenate.

    XLA:CPU runs feature_group_count=2 about 5x slower than the same work split in two, with
    bit-identical output. The parameters keep nnx.Conv's grouped layout, kernel (kh, kw, in/groups, out):
    group g reads input channels [g*in/groups, (g+1)*in/groups) and owns kernel[..., g*out/groups:(g+1)*out/groups],
    which is exactly the canonical (out, in/groups, kh, kw) weight transposed to HWIO.
    """

    def __call__(self, x):
        groups = self.feature_group_count
        x, kernel, bias = self.promote_dtype((x, self.kernel[...], self.bias[...]), dtype=self.dtype)
        kernels = jnp.split(kernel, groups, axis=-1)
        ys = [lax.conv_general_dilated(xg, kg, self.strides, self.padding, dimension_numbers=NHWC,
                                       precision=self.precision)
              for xg, kg in zip(jnp.split(x, groups, axis=-1), kernels)]
        return jnp.concatenate(ys, axis=-1) + bias


def conv_padding(layer: Conv) -> tuple[tuple[int, int], tuple[int, int]]:
    """The spec's explicit conv padding, plus one trailing zero row and column for an unpadded strided
    convolution when no output window reaches them: the output is bit-identical, and XLA:CPU runs the
    padded form 2.5-4x faster (batch 32: caffe's conv1 at 227 125 -> 51 ms, slim-v2's 86 -> 20 ms)."""
    if any(layer.padding[0] + layer.padding[1]) or layer.stride == 1:
        return layer.padding
    if any((n - layer.kernel) % layer.stride == layer.stride - 1 for n in layer.in_shape[1:]):
        return layer.padding  # an extra row or column would start one more window
    return (0, 1), (0, 1)


def _pool_slices(x, layer: MaxPool):
    """The -inf-padded input and the k*k strided slices, one per window position p*k+q, in that order."""
    (top, bottom), (left, right) = layer.padding
    if top or bottom or left or right:
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
    k, s = layer.kernel, layer.stride
    _, oh, ow = layer.out_shape
    spans = [(i, j, (slice(None), slice(i, i + s * (oh - 1) + 1, s), slice(j, j + s * (ow - 1) + 1, s)))
             for i in range(k) for j in range(k)]
    return x, spans


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x, layer: MaxPool):
    """Max over k*k strided slices of the -inf-padded input: same numbers as lax.reduce_window, ~5x
    faster on XLA:CPU. Padding is the spec's explicit ((top, bottom), (left, right)), so Caffe's ceil
    rounding is an extra -inf row/column and a window never sees a value that is not a real pixel.

    Its gradient goes to each window's first maximum (row-major), as torch's and TensorFlow's max-pool
    gradients send it; differentiating the jnp.maximum chain would split it between equal values
    (1/2, 1/4, ... by the chain's order): as valid at a tie, but then the gradient of a ReLU's exact zeros
    before the pool (every window of dead units) would differ from every other engine's."""
    padded, spans = _pool_slices(x, layer)
    return functools.reduce(jnp.maximum, (padded[span] for _, _, span in spans))


def _max_pool_fwd(x, layer):
    return max_pool(x, layer), x


def _max_pool_bwd(layer, x, g):
    """Each window's gradient onto its first maximum: one masked copy of g per window position, spread back by
    lax.pad's interior padding (stride - 1 zeros between elements) and summed, which XLA fuses into one pass:
    on XLA:CPU (paper's pool1, batch 16) 2-3x faster than .at[].add and faster than the jnp.maximum chain's own."""
    padded, spans = _pool_slices(x, layer)
    best, first = padded[spans[0][2]], jnp.zeros(g.shape, jnp.int32)
    for t, (_, _, span) in enumerate(spans[1:], 1):
        later = padded[span] > best  # strictly: an equal later value leaves the first maximum
        best, first = jnp.where(later, padded[span], best), jnp.where(later, t, first)
    (top, _), (left, _) = layer.padding
    h, w, s = padded.shape[1], padded.shape[2], layer.stride
    oh, ow = g.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    grad = functools.reduce(operator.add, (
        lax.pad(jnp.where(first == t, g, zero), zero,
                [(0, 0, 0), (i, h - i - s * (oh - 1) - 1, s - 1), (j, w - j - s * (ow - 1) - 1, s - 1), (0, 0, 0)])
        for t, (i, j, _) in enumerate(spans)))
    return (grad[:, top:top + x.shape[1], left:left + x.shape[2]],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def lrn(x, layer: LRN):
    """b_c = a_c / (k + scale * sum_{size channels centred on c} a_j^2) ** beta, zeros outside [0, C).

    JAX has no LRN. The window sum is `size` shifted slices of the zero-padded squares, which XLA fuses
    into one loop (lax.reduce_window over the channel axis is ~2x slower, a banded matmul too); for the
    beta=0.75 every variant uses, d**-0.75 = rsqrt(d*sqrt(d)) avoids pow's exp/log (~3x faster).
    bfloat16 and float16 are computed in float32 (0-255 pixels square past float16's 65504) and rounded back."""
    dtype = x.dtype
    x = x.astype(jnp.promote_types(dtype, jnp.float32))
    half = layer.size // 2
    c = x.shape[-1]
    sq = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (half, layer.size - 1 - half)))
    window_sum = functools.reduce(operator.add, (sq[..., i:i + c] for i in range(layer.size)))
    d = layer.k + layer.scale * window_sum
    if layer.beta == 0.75:
        return (x * lax.rsqrt(d * jnp.sqrt(d))).astype(dtype)
    return (x * d ** -layer.beta).astype(dtype)


def adaptive_avg_pool(x, layer: AdaptiveAvgPool):
    """PyTorch's AdaptiveAvgPool2d, bins [floor(i*in/out), ceil((i+1)*in/out)): a reshape-mean when the
    bins tile the input (6->6 is the identity, 12->6 a 2x2 mean), else the averaging matrices of
    common.adaptive_pool_matrix (overlapping bins, e.g. 7->6 at input 256)."""
    n, h, w, c = x.shape
    out = layer.output_size
    if adaptive_pool_is_uniform(h, out) and adaptive_pool_is_uniform(w, out):
        if h == out and w == out:
            return x
        return x.reshape(n, out, h // out, out, w // out, c).mean(axis=(2, 4))
    mh = jnp.asarray(adaptive_pool_matrix(h, out, np.float64), dtype=x.dtype)  # 1/3 in the model's own precision
    mw = jnp.asarray(adaptive_pool_matrix(w, out, np.float64), dtype=x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw)


def initializer(init: Init, fan_in: int, fan_out: int):
    """A jax.nn.initializers function for one of the variants' rules (common.Init)."""
    if init.kind == "normal":
        return jax.nn.initializers.normal(init.value)
    if init.kind == "truncated_normal":
        # jax's stddev is the pre-truncation one and it cuts at +-2 of it: TF's, Keras's and torch's convention
        return jax.nn.initializers.truncated_normal(init.value, lower=-2.0, upper=2.0)
    if init.kind == "constant":
        return jax.nn.initializers.constant(init.value)
    if init.kind in ("fan_in_uniform", "glorot_uniform"):
        # symmetric U(-bound, bound) for weight and bias alike (jax's uniform is [0, scale))
        bound = init_bounds(init, fan_in, fan_out)
        return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
    raise ValueError(f"unknown init rule {init.kind!r}")
