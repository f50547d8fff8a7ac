"""Gradients of the Keras model on any backend, for the gradient parity suite (parity_tests/grad.py).

Keras has no portable way to ask for the gradient at an intermediate layer, so the forward here is the model's
own layers called in order, with a zero "probe" added to every named layer's output and the weights passed in
through a StatelessScope; the backend's vjp (tf_impl/backends) then gives dL/d input, dL/d each probe (= dL/d
that layer's output) and dL/d each weight in one backward pass.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from alexnet_parity.common import Spec, activation_from_nchw, activation_to_nchw, nchw_to_nhwc
from alexnet_parity.common.dtypes import check_dtype, output_dtype
from alexnet_parity.common.layout import kernel_layout

from . import backends
from .model import activations, build_model


def run_gradients(spec: Spec, weights: dict, x_nchw: np.ndarray, cotangent: np.ndarray, device: str = "cpu",
                  dtype: str = "float32") -> dict[str, dict[str, np.ndarray]]:
    """Build `spec` with canonical `weights` in `dtype` on `device`, run eval mode on the batch (NCHW, fed as
    NHWC), and differentiate L = sum(cotangent * output). Returns numpy in the canonical layout (NCHW maps,
    fc6's inputs in C,H,W order, canonical weight layout):
    "gradients": dL/d input ("input"), dL/d every named layer's output, dL/d every canonical weight;
    "activations": the forward's every named layer output (its ReLU signs and pool maxima are the routing)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    dtype = check_dtype(dtype)
    backend = backends.current()
    with backend.device_scope(device), backend.dtype_scope(dtype):
        model = build_model(spec, weights, dtype=dtype)
        params = [model.get_layer(layer.name) for layer in spec.param_layers]
        variables = [v for layer in params for v in (layer.kernel, layer.bias)]
        names = [layer.name for layer in spec.layers]
        chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        x = ops.convert_to_tensor(nchw_to_nhwc(np.asarray(x_nchw, dtype=np.float32)), dtype=dtype)
        first = activations(model, x)
        probes = [ops.zeros_like(first[name]) for name in names]

        def forward(x, *values):
            probe, weight = dict(zip(names, values[:len(names)])), values[len(names):]
            acts = {}
            with keras.StatelessScope(state_mapping=list(zip(variables, weight))):
                h = x
                for layer in chain:
                    h = layer(h, training=False)
                    if layer.name in probe:
                        h = acts[layer.name] = h + probe[layer.name]
            return h, acts

        last = names[-1]
        c = activation_from_nchw(spec, last, np.asarray(cotangent, dtype=np.float64))
        _, acts, grads = backend.vjp(forward, [x, *probes, *[v.value for v in variables]], c)

    def numpy(t):  # numpy has no bfloat16: reduced precisions come back as float32
        return np.asarray(ops.convert_to_numpy(t)).astype(output_dtype(dtype))

    g_input, g_acts, g_vars = grads[0], grads[1:1 + len(names)], grads[1 + len(names):]
    out = {"input": numpy(g_input).transpose(0, 3, 1, 2)}
    out.update({name: activation_to_nchw(spec, name, numpy(g)) for name, g in zip(names, g_acts)})
    layout = kernel_layout(spec)
    for i, layer in enumerate(params):
        out[f"{layer.name}.weight"] = layout[layer.name][1](numpy(g_vars[2 * i]))
        out[f"{layer.name}.bias"] = numpy(g_vars[2 * i + 1])
    return {"gradients": out,
            "activations": {name: activation_to_nchw(spec, name, numpy(a)) for name, a in acts.items()}}
