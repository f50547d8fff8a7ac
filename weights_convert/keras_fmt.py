"""keras: a tf_impl (Keras 3, TensorFlow backend) model's weights, as .weights.h5 or a whole .keras file.

Layout of .weights.h5 (Keras 3's own, written by model.save_weights): every layer is an HDF5 group
layers/<keras class name>[_n]/vars whose attribute `name` is the layer's name; tf_impl names them after
the spec, so the groups named conv1..conv5 hold vars/0 = kernel (kh, kw, in/groups, out) HWIO and
vars/1 = bias, and fc6..fc8 hold vars/0 = kernel (in, out) and vars/1 = bias, fc6's rows in H,W,C order
(the NHWC flatten's). We add root attributes alexnet_variant/_input_size/_num_classes/_include_top and
alexnet_spec (Spec.to_json()), which Keras ignores; a file without them has its spec inferred from those
shapes. A .keras file is Keras's zip (config.json + model.weights.h5); tf_impl's AlexNet stores its
spec in its config, so it is loaded with keras.saving.load_model(safe_mode=True) and the spec read back
with tf_impl.spec_of. Tensors go in and out through tf_impl.build_model / load_weights / export_weights:
this module knows the file's layout only to find the spec.
"""
from __future__ import annotations

import os

import numpy as np

from alexnet_parity.common import Spec

from ._common import atomic_output, finish, resolve_spec, spec_of_file, starts_with

ATTR_PREFIX = "alexnet_"
PARAM_LAYERS = tuple(f"conv{i}" for i in range(1, 6)) + ("fc6", "fc7", "fc8")


def _framework():
    try:
        from alexnet_parity import tf_impl
        tf_impl.AlexNet  # noqa: B018 -- the package's names are lazy: import Keras, and register tf_impl's layers
    except ImportError as err:
        raise ValueError(f"the keras format needs TensorFlow and Keras ({err})") from None
    return tf_impl


def _quiet_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- .weights.h5 ------------------------------------------------------------------------------------------

def _h5_layout(path: str) -> tuple[dict, dict]:
    """(canonical shapes, recorded spec attributes) of a Keras 3 .weights.h5, read with h5py only."""
    import h5py

    shapes, meta = {}, {}
    try:
        with h5py.File(path, "r") as f:
            meta = {k[len(ATTR_PREFIX):]: _attr(v) for k, v in f.attrs.items() if k.startswith(ATTR_PREFIX)}
            layers = f.get("layers")
            if not isinstance(layers, h5py.Group):
                raise ValueError(f"{path}: no 'layers' group: not a Keras 3 .weights.h5 file")
            for group in layers.values():
                vars_ = group.get("vars") if isinstance(group, h5py.Group) else None
                name = _attr(vars_.attrs.get("name")) if isinstance(vars_, h5py.Group) else None
                if name not in PARAM_LAYERS:
                    continue
                kernel, bias = vars_.get("0"), vars_.get("1")
                if not isinstance(kernel, h5py.Dataset) or not isinstance(bias, h5py.Dataset):
                    raise ValueError(f"{path}: layer {name!r} lacks its kernel (vars/0) or bias (vars/1)")
                k = kernel.shape
                shapes[f"{name}.weight"] = (k[3], k[2], k[0], k[1]) if len(k) == 4 else tuple(reversed(k))
                shapes[f"{name}.bias"] = bias.shape
    except (OSError, KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}") from None
    if not shapes:
        raise ValueError(f"{path}: no layer named conv1..fc8: not the weights of a tf_impl AlexNet")
    return shapes, meta


def _attr(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (
        value.item() if isinstance(value, np.generic) else value)


def _load_weights_h5(path, variant, input_size) -> tuple[Spec, dict]:
    shapes, meta = _h5_layout(path)
    spec = spec_of_file(meta, shapes, path, variant, input_size)
    tf_impl = _framework()
    model = tf_impl.build_model(spec, seed=0)
    try:
        model.load_weights(path)
    except Exception as err:  # noqa: BLE001 -- Keras/h5py raise many types on a corrupt file; one message
        raise ValueError(f"{path}: Keras could not load it into {spec.describe()}: {_first_line(err)}") from None
    return finish(spec, tf_impl.export_weights(model), path)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# --- .keras ---------------------------------------------------------------------------------------------

def _load_keras(path, variant, input_size) -> tuple[Spec, dict]:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras file (a zip archive), truncated or corrupt")
    tf_impl = _framework()
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 -- deserialising a foreign file fails in many ways; one message
        raise ValueError(f"{path}: Keras could not load it: {_first_line(err)}") from None
    try:
        spec = tf_impl.spec_of(model)
    except TypeError as err:
        raise ValueError(f"{path}: {err}") from None
    weights = tf_impl.export_weights(model)
    if variant not in (None, spec.variant) or input_size not in (None, spec.input_size):
        spec = resolve_spec({k: v.shape for k, v in weights.items()}, path, variant=variant or spec.variant,
                            input_size=input_size or spec.input_size)
    return finish(spec, weights, path)


# --- the format -------------------------------------------------------------------------------------------

def load(path: str, variant: str | None = None, input_size: int | None = None) -> tuple[Spec, dict]:
    _quiet_keras()
    if path.endswith(".keras"):
        return _load_keras(path, variant, input_size)
    if path.endswith(".h5"):
        return _load_weights_h5(path, variant, input_size)
    raise ValueError(f"{path}: the keras format is a .weights.h5 or a .keras file")


def save(path: str, spec: Spec, weights: dict) -> None:
    _quiet_keras()
    if path.endswith(".keras"):
        suffix = ".keras"
    elif path.endswith(".weights.h5"):
        suffix = ".weights.h5"
    else:
        raise ValueError(f"{path}: Keras writes .weights.h5 (weights) or .keras (whole model) files")
    tf_impl = _framework()
    model = tf_impl.build_model(spec, weights)
    with atomic_output(path, suffix=suffix, replaces=sniff, what=f"a Keras {suffix} file") as tmp:
        if suffix == ".keras":
            model.save(tmp)
        else:
            model.save_weights(tmp)
            import h5py

            with h5py.File(tmp, "r+") as f:
                for key, value in {"variant": spec.variant, **spec.overrides(), "spec": spec.to_json()}.items():
                    f.attrs[ATTR_PREFIX + key] = str(value).lower() if isinstance(value, bool) else value


def claims(path: str) -> bool:
    return path.endswith((".weights.h5", ".keras"))


def sniff(path: str) -> bool:
    """A .keras file is a zip archive, a .weights.h5 an HDF5 file (by their magic bytes)."""
    return starts_with(path, b"PK\x03\x04") if path.endswith(".keras") else starts_with(path, b"\x89HDF\r\n\x1a\n")
