"""The few layers Keras lacks for AlexNet, registered so `load_model(..., safe_mode=True)` rebuilds them.

Each is the canonical definition from common/, written with TensorFlow ops (this package is the
TensorFlow backend's), and each keeps its whole definition in get_config.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from common import adaptive_pool_is_uniform, adaptive_pool_matrix

PACKAGE = "alexnet_parity"
register = keras.saving.register_keras_serializable(package=PACKAGE)


@register
class LocalResponseNorm(keras.layers.Layer):
    """b_c = a_c / (k + scale * sum_{size channels centred on c} a_j^2) ** beta, zeros past the edges.

    `scale` multiplies the plain sum: it already holds the variant's alpha or alpha/n. The window sum
    is one matmul with a (C, C) band of ones and the power is exp(-beta * log): on 2 CPU cores that is
    ~20% faster than tf.nn.local_response_normalization (whose bias/alpha/beta mean the same), equally
    exact (~2e-7 relative), and it also takes even sizes, whose window tf.nn's depth_radius cannot say.
    """

    def __init__(self, size: int, k: float, beta: float, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.size, self.k, self.beta, self.scale = int(size), float(k), float(beta), float(scale)

    def _band(self, channels: int) -> np.ndarray:
        """(C_in, C_out) ones where input channel j is in output channel c's window [c - size//2, ...]."""
        half = self.size // 2
        offset = np.arange(channels)[:, None] - np.arange(channels)[None, :]  # j - c
        return ((offset >= -half) & (offset <= self.size - 1 - half)).astype(np.float32)

    def call(self, x):
        channels = x.shape[-1]
        window_sum = tf.tensordot(tf.square(x), tf.constant(self._band(channels), dtype=x.dtype), axes=1)
        return x * tf.exp(-self.beta * tf.math.log(self.k + self.scale * window_sum))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "k": self.k, "beta": self.beta, "scale": self.scale}


@register
class NegInfPadding2D(keras.layers.Layer):
    """Pads H and W with -inf, so the max pool that follows sees only real pixels (Caffe's ceil pooling)."""

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        (top, bottom), (left, right) = padding
        self.padding = ((int(top), int(bottom)), (int(left), int(right)))

    def call(self, x):
        return tf.pad(x, [[0, 0], *self.padding, [0, 0]], constant_values=float("-inf"))

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
            return tf.nn.avg_pool2d(x, window, window, "VALID")
        mh = tf.constant(adaptive_pool_matrix(h, out), dtype=x.dtype)
        mw = tf.constant(adaptive_pool_matrix(w, out), dtype=x.dtype)
        return tf.einsum("pw,nowc->nopc", mw, tf.einsum("oh,nhwc->nowc", mh, x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


@register
class GroupedConv2D(keras.layers.Conv2D):
    """Keras Conv2D whose groups run as one convolution per group, then a concatenate.

    Keras's TensorFlow backend sends every grouped convolution through XLA, which on CPU is ~1.6x
    slower here; per-group convolutions give bit-identical outputs and have gradients everywhere
    (TF's native grouped Conv2D has none on CPU without oneDNN). The kernel keeps Keras's grouped
    shape (kh, kw, in/groups, out).
    """

    def convolution_op(self, inputs, kernel):
        return tf.concat([tf.nn.convolution(x, k, self.strides, self.padding.upper(), dilations=self.dilation_rate)
                          for x, k in zip(tf.split(inputs, self.groups, axis=-1),
                                          tf.split(kernel, self.groups, axis=-1))], axis=-1)
