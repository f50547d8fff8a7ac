"""flax: a jax_impl (Flax NNX) model's state, as an Orbax checkpoint directory or a .msgpack file.

Layout: nnx.state(model) of jax_impl's AlexNet, whose parameter modules are attributes named after the
spec: {conv1..conv5: {kernel (kh, kw, in/groups, out) HWIO, bias}, fc6..fc8: {kernel (in, out), bias}},
fc6's kernel rows in H,W,C order (the NHWC flatten's). An Orbax directory is written as the Flax guide
does, StandardCheckpointer().save(dir, nnx.state(model)), so each leaf sits one level deeper under
"value"; the spec goes into Orbax's custom metadata (variant, input_size, num_classes, include_top,
spec). A .msgpack is flax.serialization.msgpack_serialize(nnx.to_pure_dict(state)) and holds no spec
(it is inferred from the shapes). Tensors go in and out through jax_impl's model and export_weights.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from alexnet_parity.common import Spec, canonical_shape

from ._common import atomic_output, check_regular, check_tree, finish, spec_of_file, starts_with
from .registry import Format

PARAM_LAYERS = tuple(f"conv{i}" for i in range(1, 6)) + ("fc6", "fc7", "fc8")
ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt")


def _framework():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from alexnet_parity import jax_impl
        from flax import nnx
    except ImportError as err:
        raise ValueError(f"the flax format needs JAX and Flax ({err})") from None
    return jax_impl, nnx


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _canonical_shapes(tree: dict, path: str, arrays_too: bool = True) -> tuple[dict, dict]:
    """(pure {layer: {kernel, bias}} of numpy arrays, canonical shapes) from a restored tree, or from its
    metadata (leaves with .shape and .dtype only) with arrays_too=False."""
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: holds a {type(tree).__name__}, not a state dict")
    pure, shapes = {}, {}
    for layer, params in tree.items():
        if layer not in PARAM_LAYERS:
            raise ValueError(f"{path}: entry {layer!r} is not an AlexNet parameter layer ({', '.join(PARAM_LAYERS)})")
        if not isinstance(params, dict) or set(params) != {"kernel", "bias"}:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{path}: entry {layer!r} should hold kernel and bias, holds {got}")
        arrays = {}
        for kind, value in params.items():
            if isinstance(value, dict) and set(value) == {"value"}:  # nnx.state's Variable level
                value = value["value"]
            if not hasattr(value, "shape") or not hasattr(value, "dtype"):
                raise ValueError(f"{path}: {layer}/{kind} is a {type(value).__name__}, not an array")
            arrays[kind] = np.asarray(value) if arrays_too else value
        pure[layer] = arrays
        shapes[f"{layer}.weight"] = canonical_shape(arrays["kernel"].shape)
        shapes[f"{layer}.bias"] = tuple(arrays["bias"].shape)
    if not pure:
        raise ValueError(f"{path}: holds no parameters")
    return pure, shapes


def _export(spec: Spec, pure: dict, path: str) -> dict:
    """Put the arrays into an abstract jax_impl model of the spec and export canonical weights."""
    jax_impl, nnx = _framework()
    model = nnx.eval_shape(lambda: jax_impl.AlexNet(spec, rngs=nnx.Rngs(0)))
    state = nnx.state(model)
    try:
        nnx.replace_by_pure_dict(state, pure)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: does not fit {spec.describe()}: {_first_line(err)}") from None
    nnx.update(model, state)
    return jax_impl.export_weights(model)


def _load_msgpack(path: str):
    from flax import serialization

    check_regular(path)
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return serialization.msgpack_restore(data), {}
    except Exception as err:  # noqa: BLE001 -- msgpack's errors on corrupt input are of many types
        raise ValueError(f"{path}: not a readable msgpack file (truncated or corrupt?): {_first_line(err)}") from None


MAX_EXPANSION = 16  # TensorStore compresses float32 weights by a few percent; far more is a forged size


def _load_orbax(path: str, variant, input_size):
    """(spec, restored tree) of an Orbax directory. Its entries are checked first (regular files, links
    inside it: a metadata file linked to /dev/zero or a FIFO is refused), and the spec is resolved from the
    metadata's shapes before anything is restored, whose size must fit what the directory stores."""
    stored = check_tree(path, path)
    _framework()
    import jax
    import orbax.checkpoint as ocp

    where = os.path.abspath(path)  # Orbax takes absolute paths only
    try:
        checkpointer = ocp.StandardCheckpointer()
        meta = checkpointer.metadata(where)
        custom = dict(getattr(meta, "custom_metadata", None) or {})
        layout = getattr(meta.item_metadata, "tree", meta.item_metadata)
    except Exception as err:  # noqa: BLE001 -- Orbax/TensorStore raise many types on a damaged directory
        raise ValueError(f"{path}: not a readable Orbax checkpoint (damaged?): {_first_line(err)}") from None
    _, shapes = _canonical_shapes(layout, path, arrays_too=False)
    spec = spec_of_file(custom, shapes, path, variant, input_size)
    declared = sum(int(np.prod(m.shape, dtype=np.int64)) * np.dtype(m.dtype).itemsize
                   for m in jax.tree.leaves(layout, is_leaf=lambda m: hasattr(m, "shape")))
    if declared > MAX_EXPANSION * stored + (1 << 20):
        raise ValueError(f"{path}: its metadata declares {declared} bytes of arrays, the directory stores "
                         f"{stored}: forged sizes or a damaged checkpoint")
    try:
        # restore into numpy arrays: no device or sharding from the writer's machine is needed
        target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), layout, is_leaf=lambda m: hasattr(m, "shape"))
        with _quiet_orbax():  # a damaged file fails in TensorStore's threads, as a full disk does when writing
            tree = checkpointer.restore(where, target)
    except Exception as err:  # noqa: BLE001 -- Orbax/TensorStore raise many types on a damaged directory
        raise ValueError(f"{path}: not a readable Orbax checkpoint (damaged?): {_first_line(err)}") from None
    return spec, tree


def load(path: str, variant: str | None = None, input_size: int | None = None) -> tuple[Spec, dict]:
    if os.path.isdir(path):
        spec, tree = _load_orbax(path, variant, input_size)
        pure, _ = _canonical_shapes(tree, path)
    else:
        tree, meta = _load_msgpack(path)
        pure, shapes = _canonical_shapes(tree, path)
        spec = spec_of_file(meta, shapes, path, variant, input_size)
    return finish(spec, _export(spec, pure, path), path)


def save(path: str, spec: Spec, weights: dict) -> None:
    jax_impl, nnx = _framework()
    model = jax_impl.build_model(spec, weights)
    state = nnx.state(model)
    if path.endswith(".msgpack"):
        from flax import serialization

        data = serialization.msgpack_serialize(nnx.to_pure_dict(state))
        with atomic_output(path, replaces=sniff, what="a msgpack file") as tmp, open(tmp, "wb") as fh:
            fh.write(data)
        return
    import orbax.checkpoint as ocp

    meta = {"variant": spec.variant, **spec.overrides(), "spec": spec.to_json()}
    # directory=True: Orbax writes into a folder of its own beside the one it is given, which a failed
    # write would otherwise leave behind
    with atomic_output(path.rstrip("/"), replaces=is_orbax_dir, what="an Orbax checkpoint", directory=True) as tmp, \
            _quiet_orbax():
        checkpointer = ocp.StandardCheckpointer()
        try:
            checkpointer.save(tmp, state, custom_metadata=meta)
            checkpointer.wait_until_finished()
        except BaseException:
            _drain(os.path.dirname(tmp))
            raise
        finally:
            checkpointer.close()


def _drain(holder: str, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """After a failed save, TensorStore's writes still in flight finish on their own threads: wait until the
    holder stops changing, so that removing it removes all."""
    import time

    def snapshot():
        return sorted((d, f, os.path.getsize(os.path.join(d, f)) if os.path.exists(os.path.join(d, f)) else -1)
                      for d, _, files in os.walk(holder) for f in files)

    start, last, seen = time.monotonic(), time.monotonic(), snapshot()
    while time.monotonic() - start < limit_s and time.monotonic() - last < quiet_s:
        time.sleep(0.05)
        now = snapshot()
        if now != seen:
            seen, last = now, time.monotonic()


def _late_report(value) -> bool:
    """What TensorStore's late callbacks raise after a failed save: they report to Orbax's closed loop."""
    return isinstance(value, RuntimeError) and "Event loop is closed" in str(value)


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs every failed read or write of its background threads (hundreds of lines on a full disk)
    before raising, and their late callbacks print tracebacks; the error that reaches the caller says it once."""
    import logging
    import sys

    # asyncio: a failed write's tasks are collected later and log "Task exception was never retrieved"
    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "jax", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    hooks = sys.excepthook, sys.unraisablehook
    # the late reports of a failed save come from TensorStore's threads, during and after the save
    sys.excepthook = lambda kind, value, tb: _late_report(value) or hooks[0](kind, value, tb)
    sys.unraisablehook = lambda info: _late_report(info.exc_value) or hooks[1](info)
    yield
    # only after a save that succeeded: nothing is late then; after a failure the late reports stay quiet
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)
    sys.excepthook, sys.unraisablehook = hooks


def is_orbax_dir(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in ORBAX_MARKERS)


def claims(path: str) -> bool:
    return path.endswith((".msgpack", ".orbax", ".orbax/")) or is_orbax_dir(path)


def sniff(path: str) -> bool:
    """An Orbax checkpoint directory, or a msgpack file holding a map (fixmap, map16 or map32)."""
    if os.path.isdir(path):
        return is_orbax_dir(path)
    return starts_with(path, *(bytes([b]) for b in (*range(0x80, 0x90), 0xDE, 0xDF)))


FORMAT = Format("flax", load, save, claims, sniff, frameworks=("jax", "flax", "orbax"), holds="all",
                files="Orbax directory (.orbax or any existing one), .msgpack", directory="an Orbax checkpoint")
