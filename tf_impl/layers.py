"""The few layers Keras lacks for AlexNet, registered so `load_model(..., safe_mode=True)` rebuilds them.

Each is the canonical definition from common/, written with TensorFlow ops (this package is the
TensorFlow backend's), and each keeps its whole definition in get_config.
"""
from __future__ import annotations

import functools

import tensorflow as tf
import keras

from alexnet_parity.common import adaptive_pool_is_uniform, adaptive_pool_matrix

PACKAGE = "alexnet_parity"
register = keras.saving.register_keras_serializable(package=PACKAGE)


def _lrn(x, size: int, k: float, beta: float, scale: float):
    """The channel-window sum as `size` shifted slices of the padded squares. Compiled on its own (see
    _lrn_xla) XLA fuses it all into one pass over x: on 2 CPU cores ~3x less CPU than
    tf.nn.local_response_normalization or a (C, C) band matmul, as exact (~3e-7)."""
    half, channels = size // 2, x.shape[-1]
    squares = tf.pad(tf.square(x), [[0, 0], [0, 0], [0, 0], [half, size - 1 - half]])
    t = k + scale * tf.add_n([squares[..., i:i + channels] for i in range(size)])
    if beta == 0.75:  # every AlexNet: t^-3/4 = rsqrt(t) * sqrt(rsqrt(t)), cheaper than exp/log
        r = tf.math.rsqrt(t)
        return x * r * tf.sqrt(r)
    return x * tf.exp(-beta * tf.math.log(t))


_lrn_xla = tf.function(_lrn, jit_compile=True)


def _in_xla_context() -> bool:
    """True while a jit_compile function (e.g. a Keras train step on GPU) is being traced. There the
    nested compiled function must not be used: XLA then constant-folds the next MaxPoolGrad for
    minutes. The enclosing XLA compile fuses the plain ops anyway."""
    try:
        from tensorflow.python.ops import control_flow_util
        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):  # private API gone: a nested compile is still correct
        return False


@register
class LocalResponseNorm(keras.layers.Layer):
    """b_c = a_c / (k + scale * sum_{j=c-size//2}^{c-size//2+size-1} a_j^2) ** beta, zeros past the edges.

    `scale` multiplies the plain sum: it already holds the variant's alpha or alpha/n, so for odd sizes
    this is tf.nn.local_response_normalization(depth_radius=size//2, bias=k, alpha=scale, beta=beta),
    computed faster (see _lrn) and for even sizes too.
    """

    def __init__(self, size: int, k: float, beta: float, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.size, self.k, self.beta, self.scale = int(size), float(k), float(beta), float(scale)

    def call(self, x):
        return (_lrn if _in_xla_context() else _lrn_xla)(x, self.size, self.k, self.beta, self.scale)

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


@functools.cache
def _native_grouped_conv() -> bool:
    """TF's own grouped Conv2D runs everywhere oneDNN does (the x86 default). Without oneDNN, grappler
    fuses conv + bias + relu into an Eigen kernel that refuses groups, so groups must run one by one."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # private API gone: the always-correct path
        return False


def _grouped_conv(x, kernel, strides, padding: str, dilations, groups: int):
    """A grouped Conv2D: TF's native op where it works (~7% less CPU on the paper net than one convolution
    per group, bit-identical), else one convolution per group; per-group gradients either way (TF has no
    grouped Conv2DBackpropFilter on CPU without oneDNN)."""
    strides, dilations, padding = [1, *strides, 1], [1, *dilations, 1], padding.upper()
    options = dict(strides=strides, padding=padding, dilations=dilations)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx, dk = [], []
            for xg, kg, dyg in zip(*(tf.split(t, groups, -1) for t in (x, kernel, dy))):
                dx.append(tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(xg), filter=kg, out_backprop=dyg,
                                                         **options))
                dk.append(tf.raw_ops.Conv2DBackpropFilter(input=xg, filter_sizes=tf.shape(kg), out_backprop=dyg,
                                                          **options))
            return tf.concat(dx, -1), tf.concat(dk, -1)

        if _native_grouped_conv():
            return tf.nn.conv2d(x, kernel, **options), grad
        parts = zip(tf.split(x, groups, -1), tf.split(kernel, groups, -1))
        return tf.concat([tf.nn.conv2d(xg, kg, **options) for xg, kg in parts], -1), grad

    return conv(x, tf.convert_to_tensor(kernel))


@register
class GroupedConv2D(keras.layers.Conv2D):
    """Keras Conv2D(groups > 1) without the XLA detour: Keras's TensorFlow backend compiles every
    grouped convolution with XLA, ~1.6x slower on CPU than TF's own grouped convolution.
    The kernel keeps Keras's grouped shape (kh, kw, in/groups, out)."""

    def convolution_op(self, inputs, kernel):
        return _grouped_conv(inputs, kernel, self.strides, self.padding, self.dilation_rate, self.groups)
