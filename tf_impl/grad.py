"""Gradients by tf.GradientTape (Keras on the TensorFlow backend), for the gradient parity suite
(parity_tests/grad.py)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from alexnet_parity.common import Spec, activation_from_nchw, activation_to_nchw, nchw_to_nhwc
from alexnet_parity.common.layout import kernel_layout

from .model import activations, build_model


def run_gradients(spec: Spec, weights: dict, x_nchw: np.ndarray, cotangent: np.ndarray, device: str = "cpu",
                  dtype: str = "float32") -> dict[str, dict[str, np.ndarray]]:
    """Build `spec` with canonical `weights` in `dtype` on `device`, run eval mode on the batch (NCHW, fed as
    NHWC), and differentiate L = sum(cotangent * output) with a GradientTape. Returns numpy in the canonical
    layout (NCHW maps, fc6's inputs in C,H,W order, canonical weight layout):
    "gradients": dL/d input ("input"), dL/d every named layer's output, dL/d every canonical weight;
    "activations": the forward's every named layer output (its ReLU signs and pool maxima are the routing)."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"tf_impl.run_gradients needs Keras's TensorFlow backend, not {keras.backend.backend()!r}"
                           " (set KERAS_BACKEND=tensorflow before Keras is imported)")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise RuntimeError("TensorFlow sees no GPU")
        tf.config.experimental.enable_tensor_float_32_execution(False)
    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        model = build_model(spec, weights, **({} if dtype == "float32" else {"dtype": dtype}))
        native = {layer.name: model.get_layer(layer.name) for layer in spec.param_layers}
        variables = [v for m in native.values() for v in (m.kernel, m.bias)]
        x = tf.constant(nchw_to_nhwc(x_nchw), dtype=variables[0].dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            acts = activations(model, x)
            out = acts[spec.layers[-1].name]
            c = tf.constant(activation_from_nchw(spec, spec.layers[-1].name, cotangent), dtype=out.dtype)
            loss = tf.reduce_sum(out * c)
        grads = tape.gradient(loss, [x, list(acts.values()), variables],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def numpy(t):  # numpy has no bfloat16: reduced precisions come back as float32
        return t.numpy().astype(np.float64 if t.dtype == tf.float64 else np.float32)

    g_input, g_acts, g_vars = grads
    out = {"input": numpy(g_input).transpose(0, 3, 1, 2)}
    out.update({name: activation_to_nchw(spec, name, numpy(g)) for name, g in zip(acts, g_acts)})
    layout = kernel_layout(spec)
    for i, name in enumerate(native):
        out[f"{name}.weight"] = layout[name][1](numpy(g_vars[2 * i]))
        out[f"{name}.bias"] = numpy(g_vars[2 * i + 1])
    return {"gradients": out,
            "activations": {name: activation_to_nchw(spec, name, numpy(a)) for name, a in acts.items()}}

