"""What every format shares: the spec a file's tensors fit, the final checks, and atomic writes.

A format module maps its file to canonical names and layout (and nothing more); `resolve_spec` then says
which variant, input size and class count those shapes mean, and `finish` checks them against the spec
(names, shapes, NaN/inf) with one-line errors that name the file and the tensor.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid

import numpy as np

from alexnet_parity.common import VARIANTS, Spec, get_spec
from alexnet_parity.common.spec import input_sizes_for

FC_NAMES = ("fc6", "fc7", "fc8")


def shape_str(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def to_float32(array, source: str, name: str) -> np.ndarray:
    """A float32, C-contiguous, aligned, writable array (a view into a file's bytes is copied). float16 and
    float32 convert exactly; float64 is rounded to nearest (what `.float()` does); anything else is an
    error naming the tensor."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise ValueError(f"{source}: tensor {name!r} has dtype {array.dtype}; weights must be floating point")
    return np.require(array, dtype=np.float32, requirements=["C", "A", "W"])


# --- which spec do these shapes mean? ----------------------------------------------------------------------

def _spec_for(variant: str, shapes: dict, input_size: int | None) -> Spec:
    """The spec of `variant` these shapes would have: include_top when they hold fc layers, num_classes from
    fc8, input_size given, or the variant's default when fc6 fits it, or else the smallest that fits."""
    include_top = any(name.split(".")[0] in FC_NAMES for name in shapes)
    fc8 = shapes.get("fc8.weight")
    num_classes = int(fc8[0]) if include_top and fc8 is not None and len(fc8) == 2 and fc8[0] > 0 else None
    if input_size is None and include_top:
        fc6 = shapes.get("fc6.weight")
        if fc6 is not None and len(fc6) == 2:
            default = VARIANTS[variant].input_size
            sizes = input_sizes_for(variant, int(fc6[1]))
            if default not in sizes:
                input_size = sizes[0] if sizes else None
    return get_spec(variant, input_size=input_size, num_classes=num_classes, include_top=include_top)


def _mismatch(spec: Spec, shapes: dict) -> str | None:
    """The first way `shapes` differ from the spec's weights, or None when they fit."""
    expected = spec.weight_shapes()
    for name, shape in expected.items():
        if name not in shapes:
            return f"no tensor {name!r}"
        if tuple(shapes[name]) != shape:
            return f"{name!r} is {shape_str(shapes[name])}, {spec.variant} has {shape_str(shape)}"
    for name in shapes:
        if name not in expected:
            return f"unexpected tensor {name!r}"
    return None


def resolve_spec(shapes: dict[str, tuple], source: str, *, variant: str | None = None,
                 input_size: int | None = None, candidates=None) -> Spec:
    """The one spec whose weight shapes are `shapes` (canonical names -> shapes).

    variant: the user's choice, which overrides whatever the file says. candidates: the variants the
    file's own structure allows (e.g. a caffemodel's layer order). No fit, or several, is a ValueError
    naming the tensor, the variants that fit, and --variant.
    """
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        candidates = [variant]
    elif candidates is None:
        candidates = list(VARIANTS)
    fits, misses = [], {}
    for name in candidates:
        try:
            spec = _spec_for(name, shapes, input_size)
        except ValueError as err:  # an input_size or num_classes this variant cannot take
            misses[name] = str(err)
            continue
        miss = _mismatch(spec, shapes)
        if miss is None:
            fits.append(spec)
        else:
            misses[name] = miss
    if len(fits) == 1:
        return fits[0]
    if len(fits) > 1:
        names = ", ".join(s.variant for s in fits)
        raise ValueError(f"{source}: the tensor shapes fit {names} (they differ only in LRN constants and "
                         f"layer order, which this file does not record); pass --variant (one of {names})")
    if variant is not None:
        raise ValueError(f"{source}: does not hold {variant} weights: {misses[variant]}")
    if len(candidates) < len(VARIANTS):
        allowed = ", ".join(candidates)
        detail = "; ".join(f"{name}: {misses[name]}" for name in candidates)
        raise ValueError(f"{source}: the file's layers say {allowed}, but its tensors do not fit: {detail}")
    conv1 = shapes.get("conv1.weight")
    nearest = min(candidates, key=lambda v: _distance(v, shapes))
    raise ValueError(f"{source}: the tensor shapes fit no AlexNet variant"
                     + (f" (conv1.weight is {shape_str(conv1)})" if conv1 is not None else "")
                     + f"; nearest is {nearest}: {misses[nearest]}")


def _distance(variant: str, shapes: dict) -> int:
    """How many of the variant's conv tensors the shapes get wrong: picks the 'nearest' for messages."""
    expected = get_spec(variant, include_top=False).weight_shapes()
    return sum(tuple(shapes.get(name, ())) != shape for name, shape in expected.items())


def spec_from_metadata(meta: dict, shapes: dict, source: str, variant: str | None = None) -> Spec:
    """The spec a file records (variant, input_size, num_classes, include_top), checked against the
    tensors; variant= overrides the recorded variant (the rest still comes from the file)."""
    try:
        recorded = meta["variant"]
        overrides = dict(input_size=int(meta["input_size"]), num_classes=int(meta["num_classes"]),
                         include_top=str(meta["include_top"]).lower() in ("true", "1"))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: the file's spec metadata is incomplete or malformed ({err!r})") from None
    chosen = variant or recorded
    if chosen not in VARIANTS:
        raise ValueError(f"{source}: records variant {chosen!r}, which this version does not know; "
                         f"pass --variant (one of {', '.join(VARIANTS)})")
    try:
        spec = get_spec(chosen, **overrides)
    except ValueError as err:
        raise ValueError(f"{source}: the file's spec cannot be built: {err}") from None
    miss = _mismatch(spec, shapes)
    if miss is not None:
        raise ValueError(f"{source}: the file says {spec.describe()}, but {miss}")
    return spec


def check_recorded_spec(spec: Spec, recorded, path: str) -> None:
    """The recorded spec must be the one this version builds: a file made under another definition of
    the variant (different LRN constants, padding ...) would otherwise load silently as this one."""
    if recorded is None:
        return
    try:
        recorded = json.loads(recorded)
    except json.JSONDecodeError:
        raise ValueError(f"{path}: the recorded spec is not valid JSON") from None
    ours = json.loads(spec.to_json())  # tuples as lists, as the file has them
    if recorded == ours:
        return
    for mine, theirs in zip(ours.get("layers", []), recorded.get("layers", []) if isinstance(recorded, dict) else []):
        if mine != theirs and isinstance(theirs, dict):
            field = next((k for k in mine if mine.get(k) != theirs.get(k)), "?")
            raise ValueError(f"{path}: the recorded spec differs from this version's {spec.variant} at layer "
                             f"{mine.get('name')!r} ({field}: file {theirs.get(field)!r}, "
                             f"here {mine.get(field)!r}); pass --variant to load the tensors anyway")
    raise ValueError(f"{path}: the recorded spec differs from this version's {spec.describe()}; "
                     f"pass --variant to load the tensors anyway")


def spec_of_file(meta: dict, shapes: dict, path: str, variant: str | None, input_size: int | None) -> Spec:
    """The spec of a file that may record one (canonical, keras, flax). A recorded spec is checked against
    the tensors and against this version's definition (unless variant= overrides it); input_size= re-resolves
    the recorded variant at that size. A file that records none: the spec its tensor shapes imply."""
    if not meta.get("variant"):
        return resolve_spec(shapes, path, variant=variant, input_size=input_size)
    spec = spec_from_metadata(meta, shapes, path, variant)
    if input_size not in (None, spec.input_size):
        return resolve_spec(shapes, path, variant=spec.variant, input_size=input_size)
    if variant is None:
        check_recorded_spec(spec, meta.get("spec"), path)
    return spec


def finish(spec: Spec, weights: dict, source: str) -> tuple[Spec, dict[str, np.ndarray]]:
    """float32, contiguous, in the spec's order, and checked (names, shapes, NaN/inf): what load returns."""
    weights = {name: to_float32(array, source, name) for name, array in weights.items()}
    spec.check_weights(weights, source)
    return spec, {name: weights[name] for name in spec.weight_shapes()}


# --- writing ----------------------------------------------------------------------------------------------

def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def temp_name(path: str, suffix: str = "") -> str:
    """A hidden, unique name in the destination's directory (same file system, so os.replace is atomic).
    It carries the writer's pid, so a later run can tell a leftover of a killed writer from a live one."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{suffix}")


def starts_with(path: str, *magics: bytes) -> bool:
    """Does the regular file at `path` begin with one of these byte strings? (Reads a few bytes only.)"""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(max(len(m) for m in magics))
    except OSError:
        return False
    return any(head.startswith(m) for m in magics)


def _is_empty_file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) == 0


def check_replaceable(path: str, replaces, what: str) -> None:
    """A destination that exists is replaced only when it is a checkpoint of the format being written
    (`replaces(path)`, the format's sniffer) or an empty file: nothing else of the user's is ever deleted."""
    if not os.path.lexists(path) or _is_empty_file(path):
        return
    if replaces is not None and replaces(path):
        return
    kind = "directory" if os.path.isdir(path) else "file"
    raise ValueError(f"{path}: exists and is not {what}; refusing to replace this {kind} "
                     f"(nothing was written): remove it or choose another name")


def _check_destination(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{path}: directory {parent} does not exist")


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic rename (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def _replace_directory(tmp: str, path: str) -> None:
    """Put the finished directory `tmp` at `path`, over an existing checkpoint directory: one atomic swap,
    then the old one (now at `tmp`) is removed. Without renameat2, the old one is moved aside first and
    only removed once the new one is in place."""
    if _exchange(tmp, path):
        _remove(tmp)
        return
    old = temp_name(path, ".old")
    os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


@contextlib.contextmanager
def atomic_output(path: str, suffix: str = "", replaces=None, what: str = "a checkpoint of this format"):
    """Yields a temporary path (file or directory, as the writer makes it) next to `path`; on success it
    replaces `path` in one rename, on any error (or Ctrl-C) it is removed, so no partial output is left.

    An existing `path` is replaced only when `replaces(path)` says it is a checkpoint of the same format
    (or it is an empty file); anything else is refused before writing. `suffix` keeps an extension that
    a writer insists on (Keras's .keras and .weights.h5)."""
    _check_destination(path)
    check_replaceable(path, replaces, what)
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise RuntimeError(f"{path}: the writer produced no output")
        check_replaceable(path, replaces, what)  # it may have appeared while we wrote
        if os.path.lexists(path) and os.path.isdir(path) != os.path.isdir(tmp):
            kind = "directory" if os.path.isdir(path) else "file"
            raise ValueError(f"{path}: exists as a {kind}; remove it or choose another name")
        if os.path.isdir(path) and not os.path.islink(path):
            _replace_directory(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_prefix(prefix: str, last: tuple[str, ...] = (), replaces=None, what: str = "a checkpoint"):
    """For a checkpoint made of several files named prefix + ending (TF's .index and .data-*): yields a
    temporary prefix inside a hidden directory beside it; on success each file is renamed into place, the
    endings in `last` (the file that makes the checkpoint visible) after the others. Each destination file
    that exists must pass `replaces` (the format's sniffer of a prefix + ending path)."""
    _check_destination(prefix)
    tmp_dir = temp_name(prefix, ".d")
    os.mkdir(tmp_dir)
    tmp_prefix = os.path.join(tmp_dir, "ckpt")
    try:
        for ending in last:
            check_replaceable(prefix + ending, replaces, what)
        yield tmp_prefix
        endings = [name[len("ckpt"):] for name in os.listdir(tmp_dir) if name.startswith("ckpt")]
        if not endings:
            raise RuntimeError(f"{prefix}: the writer produced no output")
        for ending in endings:
            check_replaceable(prefix + ending, replaces, what)
        for ending in sorted(endings, key=lambda e: e in last):
            os.replace(tmp_prefix + ending, prefix + ending)
    finally:
        _remove(tmp_dir)


def file_size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)
