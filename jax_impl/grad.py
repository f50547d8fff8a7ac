"""Gradients by jax.vjp, for the gradient parity suite (parity_tests/grad.py).

JAX differentiates functions, not tensors: dL/d(a layer's output) is read as the gradient with respect to a
zero added to that output, which changes no value. So the forward here is the model's own, layer by layer
(AlexNet.apply_layer, as its forward runs it), with that zero after each layer."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alexnet_parity.common import Spec, activation_from_nchw, activation_to_nchw, nchw_to_nhwc
from alexnet_parity.common.layout import kernel_layout

from .model import build_model


def run_gradients(spec: Spec, weights: dict, x_nchw: np.ndarray, cotangent: np.ndarray, device: str = "cpu",
                  dtype: str = "float32") -> dict[str, dict[str, np.ndarray]]:
    """Build `spec` with canonical `weights` in `dtype` on `device`, run eval mode on the batch (NCHW, fed as
    NHWC) at full precision, and differentiate L = sum(cotangent * output) by one jax.vjp. Returns numpy in the
    canonical layout (NCHW maps, fc6's inputs in C,H,W order, canonical weight layout):
    "gradients": dL/d input ("input"), dL/d every named layer's output, dL/d every canonical weight;
    "activations": the forward's every named layer output (its ReLU signs and pool maxima are the routing)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 in JAX needs jax.config.update('jax_enable_x64', True) before any array exists")
    try:
        target = jax.devices(device)[0]
    except RuntimeError:
        raise RuntimeError(f"JAX sees no {device}") from None
    with jax.default_device(target), jax.default_matmul_precision("highest"):
        model = build_model(spec, weights, **({} if dtype == "float32" else {"dtype": dtype}))
        graphdef, params = nnx.split(model)
        real = getattr(model, spec.param_layers[0].name).kernel[...].dtype
        x = jnp.asarray(nchw_to_nhwc(x_nchw), dtype=real)
        zeros = {}
        probe = x
        for layer in spec.layers:  # the shapes of the zeros: the forward once, abstractly
            probe = jax.eval_shape(lambda t, layer=layer: model.apply_layer(layer, t, deterministic=True), probe)
            zeros[layer.name] = jnp.zeros(probe.shape, probe.dtype)

        @jax.jit
        def forward(params, x, zeros):
            net = nnx.merge(graphdef, params)
            acts = {}
            for layer in spec.layers:
                x = acts[layer.name] = net.apply_layer(layer, x, deterministic=True) + zeros[layer.name]
            return x, acts

        out, vjp, acts = jax.vjp(forward, params, x, zeros, has_aux=True)
        c = jnp.asarray(activation_from_nchw(spec, spec.layers[-1].name, cotangent), dtype=out.dtype)
        g_params, g_x, g_zeros = vjp(c)

    def numpy(a):  # numpy has no bfloat16: reduced precisions come back as float32
        a = np.asarray(a)
        return a if a.dtype == np.float64 else a.astype(np.float32)

    grads = {"input": numpy(g_x).transpose(0, 3, 1, 2)}
    grads.update({layer.name: activation_to_nchw(spec, layer.name, numpy(g_zeros[layer.name]))
                  for layer in spec.layers})
    g_model = nnx.merge(graphdef, g_params)
    for name, (_, inverse) in kernel_layout(spec).items():
        module = getattr(g_model, name)
        grads[f"{name}.weight"] = inverse(numpy(module.kernel[...]))
        grads[f"{name}.bias"] = numpy(module.bias[...])
    return {"gradients": grads,
            "activations": {layer.name: activation_to_nchw(spec, layer.name, numpy(acts[layer.name]))
                            for layer in spec.layers}}
