"""spec -> keras.Model (NHWC) on whichever backend Keras runs (TensorFlow, JAX, PyTorch): canonical weights in and
out, every activation, in any dtype of common.dtypes by a Keras dtype policy."""
from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import ops

from alexnet_parity.common import (LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, Init, MaxPool, ReLU,
                                   Spec, activation_to_nchw, from_nhwc, get_spec, init_bounds, nchw_to_nhwc,
                                   to_nhwc)
from alexnet_parity.common.dtypes import check_dtype, output_dtype

from . import backends
from .layers import (AdaptiveAvgPool2D, Float32AccumulatingDense, GroupedConv2D, LocalResponseNorm, NegInfPadding2D,
                     register)


# --- init ---------------------------------------------------------------------------------------------
class TruncatedNormal(keras.initializers.TruncatedNormal):
    """Keras's TruncatedNormal (cut at 2 std), exact on every backend: Keras's torch backend draws 4 normals per
    value and keeps the first inside the cut, or the first one when all 4 fall outside (~4 values in a million,
    so ~200 of fc6's 38M end up beyond the cut). Those are redrawn until none is left; where the backend already
    truncates exactly (TensorFlow, JAX) nothing is redrawn and the draw is Keras's own."""

    def __call__(self, shape, dtype=None):
        values = super().__call__(shape, dtype)
        for attempt in range(1, 100):
            outside = ops.abs(values - self.mean) >= 2 * self.stddev
            if not bool(ops.any(outside)):
                return values
            seed = None if self.seed is None or not isinstance(self.seed, int) else self.seed + attempt
            redrawn = keras.random.truncated_normal(shape, self.mean, self.stddev, dtype=values.dtype, seed=seed)
            values = ops.where(outside, redrawn, values)
        raise RuntimeError(f"truncated normal of std {self.stddev}: values beyond 2 std after 100 redraws")


def _initializer(init: Init, fan_in: int, fan_out: int, seed: int | None) -> keras.initializers.Initializer:
    """The Keras initializer of one common.Init rule (Keras truncates normals at 2 std and redraws)."""
    if init.kind == "constant":
        return keras.initializers.Constant(init.value)
    if init.kind == "normal":
        return keras.initializers.RandomNormal(0.0, init.value, seed=seed)
    if init.kind == "truncated_normal":
        return TruncatedNormal(0.0, init.value, seed=seed)
    if init.kind == "fan_in_uniform":
        bound = init_bounds(init, fan_in, fan_out)
        return keras.initializers.RandomUniform(-bound, bound, seed=seed)
    if init.kind == "glorot_uniform":  # Keras counts a conv's fans as k*k*in/groups and k*k*out, as common does
        return keras.initializers.GlorotUniform(seed=seed)
    raise ValueError(f"unknown init rule {init.kind!r}")


def _layer_seeds(spec: Spec, seed: int | None) -> dict[str, int | None]:
    """A distinct seed per initializer: Keras initializers with one integer seed repeat their draws."""
    names = [f"{layer.name}.{part}" for layer in spec.param_layers for part in ("weight", "bias")]
    if seed is None:
        return dict.fromkeys(names)
    states = np.random.SeedSequence(seed).generate_state(len(names))
    return {name: int(s % 2**31) for name, s in zip(names, states)}


# --- graph --------------------------------------------------------------------------------------------
def _graph(spec: Spec, seed: int | None, initialize: bool, dtype: str):
    seeds = _layer_seeds(spec, seed)
    policy = dict(dtype=keras.DTypePolicy(dtype))  # every layer's variables and computation

    def inits(layer):
        if not initialize:  # weights are about to be assigned: skip drawing 60M random numbers
            return dict(kernel_initializer="zeros", bias_initializer="zeros")
        fans = (layer.fan_in, layer.fan_out)
        return dict(kernel_initializer=_initializer(layer.weight_init, *fans, seeds[f"{layer.name}.weight"]),
                    bias_initializer=_initializer(layer.bias_init, *fans, seeds[f"{layer.name}.bias"]))

    x = inputs = keras.Input(shape=(spec.input_size, spec.input_size, spec.in_channels), dtype=dtype, name="image")
    for layer in spec.layers:
        name = layer.name
        if isinstance(layer, Conv):
            if any(p for pair in layer.padding for p in pair):
                x = keras.layers.ZeroPadding2D(layer.padding, name=f"{name}_pad", **policy)(x)
            conv = GroupedConv2D if layer.groups > 1 else keras.layers.Conv2D
            x = conv(layer.out_channels, layer.kernel, strides=layer.stride, padding="valid", groups=layer.groups,
                     name=name, **inits(layer), **policy)(x)
        elif isinstance(layer, MaxPool):
            if any(p for pair in layer.padding for p in pair):
                x = NegInfPadding2D(layer.padding, name=f"{name}_pad", **policy)(x)
            x = keras.layers.MaxPooling2D(layer.kernel, layer.stride, padding="valid", name=name, **policy)(x)
        elif isinstance(layer, ReLU):
            x = keras.layers.ReLU(name=name, **policy)(x)
        elif isinstance(layer, LRN):
            x = LocalResponseNorm(layer.size, layer.k, layer.beta, layer.scale, name=name, **policy)(x)
        elif isinstance(layer, AdaptiveAvgPool):
            x = AdaptiveAvgPool2D(layer.output_size, name=name, **policy)(x)
        elif isinstance(layer, Flatten):
            x = keras.layers.Flatten(name=name, **policy)(x)
        elif isinstance(layer, Dropout):
            x = keras.layers.Dropout(layer.rate, name=name, **policy)(x)
        elif isinstance(layer, Dense):
            x = Float32AccumulatingDense(layer.out_features, name=name, **inits(layer), **policy)(x)
        else:
            raise TypeError(f"tf_impl has no layer for kind {layer.kind!r}")
    return inputs, x


@register
class AlexNet(keras.Model):
    """A functional Keras AlexNet that rebuilds itself from its spec.

    Its config is the spec's variant, input_size, num_classes and include_top (not the layer graph),
    so a saved .keras file loads with safe_mode=True and the loaded model still knows its spec.
    `spec` builds a hand-modified spec instead (a test's broken variant, a bench's LRN-less one);
    such a model runs and trains but has no config to save.
    """

    def __init__(self, variant: str, input_size: int | None = None, num_classes: int | None = None,
                 include_top: bool = True, *, spec: Spec | None = None, seed: int | None = None,
                 initialize: bool = True, name: str | None = None, alexnet_dtype: str = "float32", **kwargs):
        if spec is None:
            spec = get_spec(variant, input_size=input_size, num_classes=num_classes, include_top=include_top)
        dtype = check_dtype(alexnet_dtype)
        inputs, outputs = _graph(spec, seed, initialize, dtype)
        super().__init__(inputs=inputs, outputs=outputs, name=name or f"alexnet_{variant.replace('-', '_')}", **kwargs)
        self._alexnet_spec, self._alexnet_dtype = spec, dtype

    @property
    def spec(self) -> Spec:
        return self._alexnet_spec

    @property
    def alexnet_dtype(self) -> str:
        """The dtype of every layer's variables and computation (a Keras DTypePolicy of that name)."""
        return self._alexnet_dtype

    def infer(self, x):
        """Eval-mode forward of an NHWC batch, compiled by the backend's own means once per model (a tf.function,
        a jax.jit of stateless_call, torch's eager mode without autograd), as a backend tensor."""
        if getattr(self, "_infer_fn", None) is None:
            self._infer_fn = backends.current().infer(self)
        return self._infer_fn(x)

    def get_config(self):
        if self.spec != get_spec(self.spec.variant, **self.spec.overrides()):
            raise ValueError(f"this {self.spec.variant} model was built from a modified spec, which its config "
                             "cannot hold; save its weights instead")
        config = {"name": self.name, "trainable": self.trainable, "variant": self.spec.variant,
                  **self.spec.overrides()}
        return config if self.alexnet_dtype == "float32" else {**config, "alexnet_dtype": self.alexnet_dtype}


def spec_of(model: keras.Model) -> Spec:
    if not isinstance(model, AlexNet):
        raise TypeError(f"{type(model).__name__} is not a tf_impl AlexNet (build one with tf_impl.build_model)")
    return model.spec


# --- weights ------------------------------------------------------------------------------------------
def load_weights(model: keras.Model, weights: dict) -> None:
    """Assign a canonical weight dict (conv OIHW, dense (out, in) with fc6's rows in C,H,W order)."""
    spec = spec_of(model)
    spec.check_weights(weights)
    for name, (kernel, bias) in to_nhwc(spec, weights).items():
        native = model.get_layer(name)
        native.kernel.assign(kernel)
        native.bias.assign(bias)


def export_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The canonical weight dict: float32, bit-exact inverse of load_weights."""
    spec = spec_of(model)
    native = {layer.name: model.get_layer(layer.name) for layer in spec.param_layers}
    return from_nhwc(spec, {name: (_numpy(m.kernel, np.float32), _numpy(m.bias, np.float32))
                            for name, m in native.items()})


def _numpy(tensor, dtype) -> np.ndarray:
    """A backend tensor or variable as numpy of `dtype` (bfloat16 and float16 convert exactly to float32)."""
    return np.asarray(ops.convert_to_numpy(tensor)).astype(dtype)


def build_model(spec: Spec, weights: dict | None = None, *, seed: int | None = None,
                dtype="float32") -> AlexNet:
    """The Keras AlexNet of `spec` on the backend this process's Keras runs: the variant's init rule drawn by
    Keras (seeded by `seed`), or `weights`. dtype: "float32" (default), "float64", "bfloat16" or "float16",
    the Keras DTypePolicy of every layer (variables and computation; LRN sums its squares in float32)."""
    from alexnet_parity.weights_convert.pretrained import resolve_weights  # weights="bvlc_alexnet": the cache
    dtype = check_dtype(dtype)
    backends.current().check_dtype(dtype)
    weights = resolve_weights(weights, spec)
    if weights is not None:
        spec.check_weights(weights)
    model = AlexNet(spec.variant, **spec.overrides(), spec=spec, seed=seed, initialize=weights is None,
                    alexnet_dtype=dtype)
    if weights is not None:
        load_weights(model, weights)
    return model


# --- running ------------------------------------------------------------------------------------------
_activation_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _activation_model(model: keras.Model) -> keras.Model:
    """One functional model, sharing `model`'s layers, whose outputs are every spec layer's output."""
    if model not in _activation_models:
        names = [layer.name for layer in spec_of(model).layers]
        _activation_models[model] = keras.Model(model.input, {n: model.get_layer(n).output for n in names})
    return _activation_models[model]


def activations(model: keras.Model, x, *, training: bool = False) -> dict:
    """Every spec layer's output for an NHWC batch, native layout (NHWC maps, H,W,C-ordered flatten), in the
    spec's order (a functional model's dict output comes back in key order on some backends)."""
    outputs = _activation_model(model)(x, training=training)
    return {layer.name: outputs[layer.name] for layer in spec_of(model).layers}


def devices() -> list[str]:
    return backends.current().devices()


def run_activations(spec: Spec, weights: dict, x_nchw: np.ndarray, device: str = "cpu",
                    dtype="float32") -> dict[str, np.ndarray]:
    """Build from canonical weights in `dtype` on `device`, run eval mode, return the activations in canonical
    layout (float64 for a float64 model, else float32)."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    dtype = check_dtype(dtype)
    backend = backends.current()
    with backend.device_scope(device), backend.dtype_scope(dtype):
        model = build_model(spec, weights, dtype=dtype)
        x = ops.convert_to_tensor(nchw_to_nhwc(np.asarray(x_nchw, dtype=np.float32)), dtype=dtype)
        acts = activations(model, x)
        return {name: activation_to_nchw(spec, name, _numpy(a, output_dtype(dtype))) for name, a in acts.items()}
