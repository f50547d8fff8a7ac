"""AlexNet as a Flax NNX module built from a common.Spec. Input and activations are NHWC."""
from __future__ import annotations

import secrets
from contextlib import nullcontext

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alexnet_parity.common import (AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, LRN, MaxPool, ReLU, Spec,
                                   activation_to_nchw, from_nhwc, nchw_to_nhwc, to_nhwc)
from alexnet_parity.common.dtypes import check_dtype, output_dtype

from .layers import SplitGroupConv, adaptive_avg_pool, conv_padding, initializer, lrn, max_pool


class AlexNet(nnx.Module):
    """Any AlexNet of common.VARIANTS. Parameter layers and dropouts are attributes named as in the spec
    (model.conv1, model.drop6, model.fc6, ...), so nnx.state(model) reads conv1/kernel, fc6/bias, ...

    It starts in train mode, as every NNX module does: dropout draws from the `rngs` passed to __call__
    (model(x, rngs=nnx.Rngs(dropout=1))); model.eval() makes it deterministic. The module holds no RNG state,
    so nnx.state(model) is parameters only.

    dtype is its parameters' and computation's type (Flax's param_dtype and dtype, both); the input is cast to
    it. float64 needs JAX's 64-bit mode (see build_model).
    """

    def __init__(self, spec: Spec, *, rngs: nnx.Rngs, dtype="float32"):
        self.spec = spec
        self.dtype = jnp.dtype(check_dtype(dtype))
        types = dict(dtype=self.dtype, param_dtype=self.dtype)
        for layer in spec.layers:
            if isinstance(layer, Conv):
                conv = SplitGroupConv if layer.groups > 1 else nnx.Conv
                setattr(self, layer.name, conv(
                    layer.in_channels, layer.out_channels, (layer.kernel, layer.kernel), (layer.stride, layer.stride),
                    padding=conv_padding(layer), feature_group_count=layer.groups, rngs=rngs, **types,
                    kernel_init=initializer(layer.weight_init, layer.fan_in, layer.fan_out),
                    bias_init=initializer(layer.bias_init, layer.fan_in, layer.fan_out)))
            elif isinstance(layer, Dense):
                setattr(self, layer.name, nnx.Linear(
                    layer.in_features, layer.out_features, rngs=rngs, **types,
                    kernel_init=initializer(layer.weight_init, layer.fan_in, layer.fan_out),
                    bias_init=initializer(layer.bias_init, layer.fan_in, layer.fan_out)))
            elif isinstance(layer, Dropout):
                setattr(self, layer.name, nnx.Dropout(layer.rate))

    def forward(self, x, *, deterministic: bool | None = None, rngs: nnx.Rngs | None = None):
        """Yields (layer name, NHWC output) for every layer of the spec, in order."""
        c, h, w = self.spec.input_shape
        if x.ndim != 4 or x.shape[1:] != (h, w, c):
            raise ValueError(f"input has shape {x.shape}; {self.spec.describe()} takes (N, {h}, {w}, {c}) NHWC")
        x = x.astype(self.dtype)
        for layer in self.spec.layers:
            x = self.apply_layer(layer, x, deterministic=deterministic, rngs=rngs)
            yield layer.name, x

    def apply_layer(self, layer, x, *, deterministic: bool | None = None, rngs: nnx.Rngs | None = None):
        """One spec layer on an NHWC batch, with this module's parameters (forward runs them in order)."""
        if isinstance(layer, (Conv, Dense)):
            return getattr(self, layer.name)(x)
        if isinstance(layer, Dropout):
            dropout = getattr(self, layer.name)
            if rngs is None and layer.rate > 0 and not (dropout.deterministic if deterministic is None
                                                        else deterministic):
                raise ValueError(f"{layer.name}: the model is in train mode (as build_model returns it, like "
                                 "every NNX module), where dropout draws from rngs: pass "
                                 "rngs=nnx.Rngs(dropout=SEED), or call model.eval() for inference")
            return dropout(x, deterministic=deterministic, rngs=rngs)
        if isinstance(layer, ReLU):
            return jax.nn.relu(x)
        if isinstance(layer, LRN):
            return lrn(x, layer)
        if isinstance(layer, MaxPool):
            return max_pool(x, layer)
        if isinstance(layer, AdaptiveAvgPool):
            return adaptive_avg_pool(x, layer)
        if isinstance(layer, Flatten):
            return x.reshape(x.shape[0], -1)  # H,W,C order: fc6's kernel rows are permuted to match
        raise TypeError(f"no JAX layer for kind {layer.kind!r}")

    def __call__(self, x, *, deterministic: bool | None = None, rngs: nnx.Rngs | None = None):
        for _, x in self.forward(x, deterministic=deterministic, rngs=rngs):
            pass
        return x


# --- canonical weights <-> parameters -----------------------------------------------------------------

def load_weights(model: AlexNet, weights: dict) -> None:
    """Copy a canonical weight dict into the model (shapes checked first): exactly into a float32 or float64
    model, rounded to nearest into a bfloat16 or float16 one."""
    spec = model.spec
    spec.check_weights(weights)
    for name, (kernel, bias) in to_nhwc(spec, weights).items():
        module = getattr(model, name)
        module.kernel.set_value(jnp.asarray(kernel, dtype=model.dtype))
        module.bias.set_value(jnp.asarray(bias, dtype=model.dtype))


def export_weights(model: AlexNet) -> dict[str, np.ndarray]:
    """The model's parameters as canonical float32 numpy arrays: the exact inverse of load_weights."""
    modules = {layer.name: getattr(model, layer.name) for layer in model.spec.param_layers}
    return from_nhwc(model.spec, {name: (m.kernel[...], m.bias[...]) for name, m in modules.items()})


def _check_x64(dtype: str) -> None:
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype 'float64' needs JAX's 64-bit mode: build and run the model inside "
                         "`with jax.enable_x64():`, or set JAX_ENABLE_X64=1 for the whole process")


def build_model(spec: Spec, weights: dict | None = None, *, seed: int | None = None,
                dtype="float32") -> AlexNet:
    """The spec as a Flax NNX module, in train mode as every NNX module starts (dropout on, drawing from the
    rngs passed to the call); model.eval() turns dropout off.

    weights=None draws the variant's init rule with JAX's RNG, nnx.Rngs(seed); seed=None takes a fresh
    seed from the OS, as torch and Keras draw from their global RNG. With weights (a canonical dict),
    the shapes are checked and the module is built abstractly (no random draw) and then filled exactly.

    dtype: "float32" (default), "float64", "bfloat16" or "float16", as Flax's param_dtype and dtype. float64
    needs JAX's 64-bit mode, which is process-wide state that would turn every other float32 user's
    jnp.asarray(python float) and integer defaults into 64-bit: so it is not switched on here; build and
    run inside `with jax.enable_x64():` (as run_activations does) or set JAX_ENABLE_X64=1.
    """
    dtype = check_dtype(dtype)
    _check_x64(dtype)
    from alexnet_parity.weights_convert.pretrained import resolve_weights  # weights="bvlc_alexnet": the cache
    weights = resolve_weights(weights, spec)
    if weights is not None:
        spec.check_weights(weights)
        model = nnx.eval_shape(lambda: AlexNet(spec, rngs=nnx.Rngs(0), dtype=dtype))
        load_weights(model, weights)
    else:
        model = AlexNet(spec, rngs=nnx.Rngs(secrets.randbits(32) if seed is None else seed), dtype=dtype)
    return model


# --- running it ------------------------------------------------------------------------------------

def activations(model: AlexNet, x, *, training: bool = False, rngs: nnx.Rngs | None = None) -> dict:
    """Every spec layer name -> its NHWC output (flatten and dense: (N, F)); nnx.jit-able.

    training=True applies dropout whatever model.train()/eval() says, drawing from `rngs`; when none is
    given a fresh OS seed is used (like torch's global RNG) -- pass rngs to reproduce, and always under jit.
    """
    if training and rngs is None:
        rngs = nnx.Rngs(dropout=secrets.randbits(32))
    return dict(model.forward(jnp.asarray(x), deterministic=not training, rngs=rngs))


def jit_forward(model: AlexNet):
    """The inference fast path: a jax.jit function NHWC x -> output of the last layer, eval mode, with the
    model's parameters as they are now (later changes to the model are not seen; call again)."""
    model = nnx.clone(model)
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    return lambda x: forward(state, x)


@nnx.jit
def _eval_activations(model: AlexNet, x) -> dict:
    """activations() in eval mode, compiled once per spec, device and precision (less CPU than
    op-by-op dispatch even for a single batch)."""
    return dict(model.forward(x, deterministic=True))


def devices() -> list[str]:
    """"cpu", plus "gpu" when JAX sees one."""
    try:
        return ["cpu", "gpu"] if jax.devices("gpu") else ["cpu"]
    except RuntimeError:
        return ["cpu"]


def run_activations(spec: Spec, weights: dict, x_nchw: np.ndarray, device: str = "cpu",
                    dtype: str = "float32") -> dict[str, np.ndarray]:
    """Build from canonical weights in `dtype` on `device` ("cpu" or "gpu"), run eval mode at full float32
    precision, and return every activation as numpy in the canonical layout (NCHW, flatten in C,H,W order):
    float64 for a float64 model, else float32. float64 runs inside jax.enable_x64(), a context: the process's
    own mode is what it was afterwards, and float32 runs before and after are bit-identical."""
    dtype = check_dtype(dtype)
    out = output_dtype(dtype)
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device not in devices():
        raise RuntimeError(f"JAX sees no {device}")
    with (jax.enable_x64(True) if dtype == "float64" else nullcontext(), jax.default_device(jax.devices(device)[0]),
          jax.default_matmul_precision("highest")):
        model = build_model(spec, weights, dtype=dtype)
        acts = _eval_activations(model, jnp.asarray(nchw_to_nhwc(np.asarray(x_nchw, dtype=np.float32))))
        # (a jitted dict comes back with its keys sorted: restore the layer order)
        return {layer.name: activation_to_nchw(spec, layer.name, np.asarray(acts[layer.name], dtype=out))
                for layer in spec.layers}
