"""keras: a tf_impl (Keras 3, TensorFlow backend) model's weights, as .weights.h5 or a whole .keras file.

Layout of .weights.h5 (Keras 3's own, written by model.save_weights): every layer is an HDF5 group
layers/<keras class name>[_n]/vars whose attribute `name` is the layer's name; tf_impl names them after
the spec, so the groups named conv1..conv5 hold vars/0 = kernel (kh, kw, in/groups, out) HWIO and
vars/1 = bias, and fc6..fc8 hold vars/0 = kernel (in, out) and vars/1 = bias, fc6's rows in H,W,C order
(the NHWC flatten's). We add root attributes alexnet_variant/_input_size/_num_classes/_include_top,
alexnet_spec (Spec.to_json()) and alexnet_preprocessing (preprocessing.to_json), which Keras ignores; a file
without them has its spec inferred from those shapes. A .keras file is Keras's zip (config.json +
model.weights.h5); tf_impl's AlexNet stores its spec in its config, so it is loaded with
keras.saving.load_model(safe_mode=True) and the spec read back with tf_impl.spec_of; its model.weights.h5
carries the same attributes (the archive is rewritten in memory after Keras writes it), so its preprocessing
travels too. Tensors go in and out through tf_impl.build_model / load_weights / export_weights: this module
knows the file's layout only to find the spec and the preprocessing.
"""
from __future__ import annotations

import os

import numpy as np

from alexnet_parity.common import Spec, canonical_shape

from . import preprocessing as prep
from ._common import atomic_output, check_regular, finish, resolve_spec, spec_of_file, starts_with
from .registry import Format

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

MAX_H5_OBJECTS = 2_000  # a tf_impl AlexNet's file holds about a hundred groups, datasets and attributes


def _check_h5_objects(f, path: str) -> None:
    """What Keras will open in the file must be in the file: no external links (a link to a FIFO hangs the
    reader, one to /dev/zero fills memory), no datasets stored in other files or virtual ones, and no
    compressed datasets (a 1 MB file could unpack to gigabytes): a dataset's stored bytes are at least
    its size, so what a reader allocates is bounded by the file's size. Keras writes none of these."""
    import h5py

    count, problem = 0, []

    def visit(name, link):  # h5py cannot raise through its visitor: keep the first problem and stop
        nonlocal count
        count += 1
        if count > MAX_H5_OBJECTS:
            problem.append(f"holds more than {MAX_H5_OBJECTS} HDF5 objects: not a Keras weights file")
        elif isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
            problem.append(f"{name!r} is {kind} ({getattr(link, 'filename', '') or link.path}); Keras writes "
                           f"none, refusing to follow it")
        else:
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                problem.extend(_dataset_problem(obj, name)[:1])
        return True if problem else None

    f.visititems_links(visit)
    if problem:
        raise ValueError(f"{path}: {problem[0]}")


def _dataset_problem(obj, name: str) -> list[str]:
    if obj.id.get_create_plist().get_external_count() or obj.is_virtual:
        return [f"dataset {name!r} keeps its data in other files; refusing to read it"]
    if obj.dtype.kind != "f" or obj.dtype.itemsize > 8:
        return [f"dataset {name!r} has dtype {obj.dtype}; weights must be floating point"]
    if obj.id.get_storage_size() < obj.size * obj.dtype.itemsize:
        return [f"dataset {name!r} declares {obj.size * obj.dtype.itemsize} bytes but stores "
                f"{obj.id.get_storage_size()} (compressed or unwritten); Keras writes them whole"]
    return []


def _h5_layout(path: str) -> tuple[dict, dict]:
    """(canonical shapes, recorded spec attributes) of a Keras 3 .weights.h5, read with h5py only."""
    import h5py

    check_regular(path)
    shapes, meta = {}, {}
    try:
        with h5py.File(path, "r") as f:
            _check_h5_objects(f, path)
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
                shapes[f"{name}.weight"] = canonical_shape(kernel.shape)
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

KERAS_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")  # all that a tf_impl model's .keras holds
MAX_JSON = 1 << 20
MAX_EXPANSION = 16  # float32 weights barely compress; a member unpacking to far more than it stores is a bomb


def _check_archive(path: str) -> None:
    """Before Keras builds anything: the archive holds only what tf_impl writes (Keras would unpack anything
    else as assets into $TMPDIR), no member unpacks to far more than it stores, the config is a tf_impl
    AlexNet whose spec builds, and model.weights.h5 is big enough to hold that spec's weights (so a config
    declaring 200,000 classes is refused, not built: it would take gigabytes)."""
    import json
    import zipfile

    from alexnet_parity.common import get_spec

    size = check_regular(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            extra = next((n for n in names if n not in KERAS_MEMBERS), None)
            if extra is not None or len(set(names)) != len(names):
                raise ValueError(f"{path}: holds {extra or 'a duplicate member'!r}; a tf_impl AlexNet's .keras holds "
                                 f"only {', '.join(KERAS_MEMBERS)}")
            for info in infos:
                if info.compress_size > size or info.file_size > MAX_EXPANSION * info.compress_size + (1 << 16):
                    raise ValueError(f"{path}: member {info.filename!r} declares {info.file_size} bytes from "
                                     f"{info.compress_size} stored: a decompression bomb or a corrupt archive")
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ValueError(f"{path}: lacks config.json or model.weights.h5: not a Keras model file")
            if archive.getinfo("config.json").file_size > MAX_JSON:
                raise ValueError(f"{path}: config.json is over {MAX_JSON >> 20} MiB: not a tf_impl AlexNet's")
            config = json.loads(archive.read("config.json"))
            weights_size = archive.getinfo("model.weights.h5").file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, UnicodeDecodeError,
            json.JSONDecodeError, NotImplementedError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable .keras file (truncated or corrupt?): {_first_line(err)}") from None
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict) or config.get("registered_name") != "alexnet_parity>AlexNet":
        raise ValueError(f"{path}: its config is not a tf_impl AlexNet (registered_name "
                         f"{config.get('registered_name') if isinstance(config, dict) else None!r})")
    try:
        overrides = {k: inner[k] for k in ("input_size", "num_classes", "include_top") if k in inner}
        if any(type(v) is not (bool if k == "include_top" else int) for k, v in overrides.items()):
            raise ValueError(f"malformed overrides {overrides}")
        spec = get_spec(inner.get("variant"), **overrides)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path}: its config's spec cannot be built: {_first_line(err)}") from None
    need = 4 * spec.param_count()
    if weights_size < need:
        raise ValueError(f"{path}: its config says {spec.describe()} ({need >> 20} MiB of float32 weights), but "
                         f"model.weights.h5 holds {weights_size} bytes")
    _check_inner_h5(path)


def _check_inner_h5(path: str) -> None:
    """model.weights.h5 inside the archive gets the .weights.h5 file's checks (Keras follows its links)."""
    import io
    import zipfile

    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read("model.weights.h5")
        with h5py.File(io.BytesIO(data), "r") as f:
            _check_h5_objects(f, f"{path}: model.weights.h5")
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path}: model.weights.h5 is not a readable HDF5 file: {_first_line(err)}") from None


def _load_keras(path, variant, input_size) -> tuple[Spec, dict]:
    import zipfile

    check_regular(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras file (a zip archive), truncated or corrupt")
    _check_archive(path)
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


def read_preprocessing(path: str, spec: Spec, **_):
    """The alexnet_preprocessing attribute of a .weights.h5, or of the model.weights.h5 inside a .keras."""
    recorded = (_keras_attrs(path) if path.endswith(".keras") else _h5_layout(path)[1]).get("preprocessing")
    return (prep.from_json(recorded, path), "file") if recorded is not None else None


def _keras_attrs(path: str) -> dict:
    """Our root attributes (alexnet_ prefix dropped) of the model.weights.h5 inside a .keras archive, read with
    h5py only, after the archive's and the inner file's checks; {} for a .keras another writer made."""
    import io
    import zipfile

    import h5py

    check_regular(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras file (a zip archive), truncated or corrupt")
    _check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read("model.weights.h5")
        with h5py.File(io.BytesIO(data), "r") as f:
            return {k[len(ATTR_PREFIX):]: _attr(v) for k, v in f.attrs.items() if k.startswith(ATTR_PREFIX)}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path}: model.weights.h5 is not a readable HDF5 file: {_first_line(err)}") from None


def save(path: str, spec: Spec, weights: dict, preprocessing=None) -> None:
    _quiet_keras()
    if path.endswith(".keras"):
        suffix = ".keras"
    elif path.endswith(".weights.h5"):
        suffix = ".weights.h5"
    else:
        raise ValueError(f"{path}: Keras writes .weights.h5 (weights) or .keras (whole model) files")
    tf_impl = _framework()
    model = tf_impl.build_model(spec, weights)
    data = (_keras_with_attributes if suffix == ".keras" else _weights_h5_bytes)(model, spec, preprocessing)
    with atomic_output(path, suffix=suffix, replaces=sniff, what=f"a Keras {suffix} file") as tmp, \
            open(tmp, "wb") as fh:
        fh.write(data)


# Both files are made in memory and written with Python's own I/O: HDF5 crashes the process (SIGSEGV) when
# its write fails on a full disk, and Keras's .keras writer may put the weights in a temporary file of its own.

def _keras_bytes(model) -> bytes:
    import io

    from keras.src.saving import saving_lib  # model.save takes paths only; this is what it calls

    buf = io.BytesIO()
    saving_lib.save_model(model, buf)
    return buf.getvalue()


def _weights_h5_bytes(model, spec: Spec, preprocessing=None) -> bytes:
    """model.save_weights' file (the model.weights.h5 a .keras holds is the same file), plus our attributes."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(_keras_bytes(model))) as archive:
        return _with_attributes(archive.read("model.weights.h5"), spec, preprocessing)


def _keras_with_attributes(model, spec: Spec, preprocessing=None) -> bytes:
    """Keras's .keras archive with our attributes on its model.weights.h5 (Keras reads that member's groups,
    not its root attributes), so the preprocessing travels in a whole-model file too; the other members and
    every member's zip entry (name, date, compression) are Keras's own."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_keras_bytes(model))) as archive, zipfile.ZipFile(out, "w") as rewritten:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == "model.weights.h5":
                data = _with_attributes(data, spec, preprocessing)
            rewritten.writestr(info, data)
    return out.getvalue()


def _with_attributes(h5_bytes: bytes, spec: Spec, preprocessing=None) -> bytes:
    import io

    import h5py

    h5 = io.BytesIO(h5_bytes)
    with h5py.File(h5, "r+") as f:
        for key, value in {"variant": spec.variant, **spec.overrides(), "spec": spec.to_json(),
                           "preprocessing": prep.to_json(preprocessing or spec.preprocessing)}.items():
            f.attrs[ATTR_PREFIX + key] = str(value).lower() if isinstance(value, bool) else value
    return h5.getvalue()


def claims(path: str) -> bool:
    return path.endswith((".weights.h5", ".keras"))


def sniff(path: str) -> bool:
    """A .keras file is a zip archive, a .weights.h5 an HDF5 file (by their magic bytes)."""
    return starts_with(path, b"PK\x03\x04") if path.endswith(".keras") else starts_with(path, b"\x89HDF\r\n\x1a\n")


FORMAT = Format("keras", load, save, claims, sniff, frameworks=("tensorflow", "keras"), holds="all",
                files=".weights.h5, .keras", preprocessing=read_preprocessing, keeps_preprocessing=True)
