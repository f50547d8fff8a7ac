"""The few layers Keras lacks for AlexNet, registered so `load_model(..., safe_mode=True)` rebuilds them.

Each is the canonical definition from common/, written in keras.ops, so it runs on every Keras backend
(TensorFlow, JAX, PyTorch) and a file saved under one loads under the others. Where a backend runs a layer
measurably faster by its own means, the one function that does so lives in that backend's module
(tf_impl/backends/) and this file falls back to the portable code everywhere else. Each layer keeps its
whole definition in get_config.
"""
from __future__ import annotations

import keras
from keras import ops

from alexnet_parity.common import adaptive_pool_is_uniform, adaptive_pool_matrix

from . import backends

PACKAGE = "alexnet_parity"
register = keras.saving.register_keras_serializable(package=PACKAGE)

_HALF_PRECISIONS = ("float16", "bfloat16")


def lrn(x, size: int, k: float, beta: float, scale: float):
    """The channel-window sum as `size` shifted slices of the padded squares (one fused pass where the backend
    compiles it), accumulated in float32 for 16-bit inputs: 0-255 pixels squared and summed overflow float16."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    wide = ops.cast(x, "float32") if dtype in _HALF_PRECISIONS else x
    half, channels = size // 2, x.shape[-1]
    squares = ops.pad(ops.square(wide), [[0, 0], [0, 0], [0, 0], [half, size - 1 - half]])
    total = squares[..., :channels]
    for i in range(1, size):
        total = total + squares[..., i:i + channels]
    t = k + scale * total
    if beta == 0.75:  # every AlexNet: t^-3/4 = rsqrt(t) * sqrt(rsqrt(t)), cheaper than exp/log
        r = ops.rsqrt(t)
        y = wide * r * ops.sqrt(r)
    else:
        y = wide * ops.exp(-beta * ops.log(t))
    return ops.cast(y, dtype) if dtype in _HALF_PRECISIONS else y


@register
class LocalResponseNorm(keras.layers.Layer):
    """b_c = a_c / (k + scale * sum_{j=c-size//2}^{c-size//2+size-1} a_j^2) ** beta, zeros past the edges.

    `scale` multiplies the plain sum: it already holds the variant's alpha or alpha/n, so for odd sizes
    this is tf.nn.local_response_normalization(depth_radius=size//2, bias=k, alpha=scale, beta=beta),
    and it is defined for even sizes too.
    """

    def __init__(self, size: int, k: float, beta: float, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.size, self.k, self.beta, self.scale = int(size), float(k), float(beta), float(scale)

    def call(self, x):
        return backends.current().lrn(lrn, x, self.size, self.k, self.beta, self.scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "k": self.k, "beta": self.beta, "scale": self.scale}


@register
class Float32AccumulatingDense(keras.layers.Dense):
    """Keras's Dense, with 16-bit inputs multiplied, summed and biased in float32 and rounded once, as torch's and
    XLA's 16-bit matmuls are. TensorFlow's CPU bfloat16 matmul on a CPU without native bfloat16 (Eigen's kernel,
    e.g. on AVX2) keeps partial sums in bfloat16: measured twice the error of one rounding on a 4096 x 1000
    product (6.0e-3 against 3.0e-3), which put the paper net's bfloat16 logits at 1.4e-2 there."""

    def call(self, inputs, training=None):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if dtype not in _HALF_PRECISIONS:
            return super().call(inputs, training=training)
        y = ops.matmul(ops.cast(inputs, "float32"), ops.cast(self.kernel, "float32"))
        if self.bias is not None:
            y = y + ops.cast(self.bias, "float32")
        y = ops.cast(y, dtype)
        return y if self.activation is None else self.activation(y)


@register
class NegInfPadding2D(keras.layers.Layer):
    """Pads H and W with -inf, so the max pool that follows sees only real pixels (Caffe's ceil pooling)."""

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        (top, bottom), (left, right) = padding
        self.padding = ((int(top), int(bottom)), (int(left), int(right)))

    def call(self, x):
        return ops.pad(x, [[0, 0], *self.padding, [0, 0]], constant_values=float("-inf"))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (top, bottom), (left, right) = self.padding
        return (n, None if h is None else h + top + bottom, None if w is None else w + left + right, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@register
class AdaptiveAvgPool2D(keras.layers.Layer):
    """PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i*in/out), ceil((i+1)*in/out)).

    Uniform bins (in divisible by out) are a plain average pool; others (torchvision at 256 or 320,
    where bins overlap) are the averaging matrices of common.adaptive_pool_matrix, one per axis.
    """

    def __init__(self, output_size: int, **kwargs):
        super().__init__(**kwargs)
        self.output_size = int(output_size)

    def call(self, x):
        out, (h, w) = self.output_size, x.shape[1:3]
        if adaptive_pool_is_uniform(h, out) and adaptive_pool_is_uniform(w, out):
            if h == w == out:
                return x
            window = (h // out, w // out)
            return ops.average_pool(x, window, window, padding="valid", data_format="channels_last")
        mh = ops.convert_to_tensor(adaptive_pool_matrix(h, out), dtype=x.dtype)
        mw = ops.convert_to_tensor(adaptive_pool_matrix(w, out), dtype=x.dtype)
        return ops.einsum("pw,nowc->nopc", mw, ops.einsum("oh,nhwc->nowc", mh, x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


@register
class GroupedConv2D(keras.layers.Conv2D):
    """Keras's Conv2D(groups > 1), with the backend's own grouped convolution where it has a faster one
    (TensorFlow: Keras compiles every grouped convolution there with XLA, ~1.6x slower on CPU than TF's own).
    The kernel keeps Keras's grouped shape (kh, kw, in/groups, out) on every backend."""

    def convolution_op(self, inputs, kernel):
        grouped = backends.current().grouped_conv
        if grouped is None:
            return super().convolution_op(inputs, kernel)
        return grouped(inputs, kernel, self.strides, self.padding, self.dilation_rate, self.groups)
