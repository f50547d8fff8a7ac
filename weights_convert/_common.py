"""What every format shares: the spec a file's tensors fit, the final checks, and atomic writes.

A format module maps its file to canonical names and layout (and nothing more); `resolve_spec` then says
which variant, input size and class count those shapes mean, and `finish` checks them against the spec
(names, shapes, NaN/inf) with one-line errors that name the file and the tensor.
"""
from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import os
import re
import shutil
import stat
import uuid
import warnings

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


# --- what a reader may open ------------------------------------------------------------------------------

class CheckpointWarning(UserWarning):
    """Something about a checkpoint the user should know, that does not stop it loading."""


def warn(message: str) -> None:
    warnings.warn(message, CheckpointWarning, stacklevel=3)


def _kind_of(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def check_regular(path: str, source: str | None = None, what: str = "") -> int:
    """A reader opens only regular files (a FIFO would hang it, /dev/zero fill memory): the file's size, or
    a ValueError naming it. Symlinks are followed (a user may link to a checkpoint)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source or path}: {what + ' ' if what else ''}{path} does not exist") from None
    except OSError as err:
        raise ValueError(f"{source or path}: cannot read {what + ' ' if what else ''}{path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{source or path}: {what + ' ' if what else ''}{path} is a directory, not a file")
        raise ValueError(f"{source or path}: {what + ' ' if what else ''}{path} is {_kind_of(st.st_mode)}, "
                         f"not a regular file; refusing to read it")
    return st.st_size


def inside(path: str, root: str) -> bool:
    """Does `path` (after resolving every link) lie inside the directory `root`?"""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


MAX_TREE_ENTRIES = 10_000  # a checkpoint directory holds tens of files; more is a hostile or wrong folder
MAX_TREE_DEPTH = 16


def check_tree(root: str, source: str) -> int:
    """Every entry under a checkpoint directory is a regular file or a directory, links stay inside it, and
    it is not absurdly deep or wide: the total size of its files, or a ValueError naming the entry."""
    total, count, base = 0, 0, os.path.realpath(root)
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        if depth > MAX_TREE_DEPTH:
            raise ValueError(f"{source}: {folder} is nested more than {MAX_TREE_DEPTH} levels deep: "
                             f"not a checkpoint directory")
        try:
            entries = list(os.scandir(folder))
        except OSError as err:
            raise ValueError(f"{source}: cannot list {folder}: {err.strerror}") from None
        for entry in entries:
            count += 1
            if count > MAX_TREE_ENTRIES:
                raise ValueError(f"{source}: holds more than {MAX_TREE_ENTRIES} entries: not a checkpoint directory")
            if entry.is_symlink() and not inside(entry.path, base):
                raise ValueError(f"{source}: {entry.path} is a link to {os.path.realpath(entry.path)}, outside "
                                 f"the checkpoint; refusing to follow it")
            try:
                st = os.stat(entry.path)
            except OSError as err:
                raise ValueError(f"{source}: cannot read {entry.path}: {err.strerror}") from None
            if stat.S_ISDIR(st.st_mode):
                if entry.is_symlink():  # a link to a folder inside: a loop, or a second path to the same files
                    raise ValueError(f"{source}: {entry.path} is a link to a directory; refusing to follow it")
                pending.append((entry.path, depth + 1))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
            else:
                raise ValueError(f"{source}: {entry.path} is {_kind_of(st.st_mode)}, not a regular file; "
                                 f"refusing to read it")
    return total


def check_member(path: str, folder: str, source: str, what: str) -> int:
    """A file a checkpoint refers to (a shard, a linked file): it must lie in the checkpoint's folder (after
    links) and be a regular file; its size."""
    if not inside(path, folder):
        raise ValueError(f"{source}: {what} {path} resolves to {os.path.realpath(path)}, outside {folder}; "
                         f"refusing to read it")
    return check_regular(path, source, what)


# --- writing ----------------------------------------------------------------------------------------------

# What a write failure looks like in the libraries that do the writing: Python's OSError carries errno;
# safetensors, h5py, TensorFlow and TensorStore put it (or its text) in their messages.
_ERRNO_PATTERNS = (re.compile(r"os error (\d+)"), re.compile(r"os_error_code='?(\d+)"),
                   re.compile(r"errno = (\d+)"), re.compile(r"\[Errno (\d+)\]"))
_ERRNO_TEXTS = {errno_codes.ENOSPC: ("No space left on device", "RESOURCE_EXHAUSTED"),
                errno_codes.EFBIG: ("File too large",), errno_codes.EROFS: ("Read-only file system",),
                errno_codes.EACCES: ("Permission denied",), errno_codes.EDQUOT: ("Disk quota exceeded",)}


def write_errno(err: BaseException) -> int | None:
    """The OS error number behind a writer's exception, or None when it is not an OS write failure."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    text = str(err)
    for pattern in _ERRNO_PATTERNS:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return next((code for code, texts in _ERRNO_TEXTS.items() if any(t in text for t in texts)), None)


class WriteError(ValueError):
    """An OS write failure (no space, read-only, permissions), as one line; `errno` and `strerror` say which, so
    a caller writing on someone's behalf (training's staging folder) can name its own destination."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.errno, self.strerror = code, os.strerror(code)


def write_error(path: str, code: int) -> WriteError:
    hint = {errno_codes.ENOSPC: "free some space or choose another place",
            errno_codes.EFBIG: "the file size limit (ulimit -f) or the file system's is too small",
            errno_codes.EROFS: "choose a writable place", errno_codes.EACCES: "choose a writable place",
            errno_codes.EDQUOT: "free some space or choose another place"}.get(code, "")
    return WriteError(f"{path}: cannot write: {os.strerror(code)}" + (f" ({hint})" if hint else "")
                      + "; nothing was written", code)


def _output_mode(path: str, is_dir: bool) -> int:
    """What a plain open() or mkdir() would give: the umask's mode, or an existing file's own."""
    if os.path.lexists(path) and not os.path.islink(path):
        return stat.S_IMODE(os.stat(path).st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if is_dir else 0o666) & ~mask


def _set_mode(tmp: str, mode: int) -> None:
    """Libraries create files 0600 (safetensors, tempfile): give the output the mode a user expects.
    Directories: the top only (inside, the writer's own modes)."""
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)
    if os.path.isdir(tmp):
        for folder, dirs, files in os.walk(tmp):
            for name in files:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(folder, name), mode & 0o666)


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{12}\.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(path: str) -> list[str]:
    """Remove the temporaries that a killed writer (SIGKILL, power loss) left beside `path`: the names
    temp_name made for the same destination, whose pid is no longer running. Returns what it removed."""
    parent, name = os.path.split(os.path.abspath(path))
    removed = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry)
        if match and match.group("name") == name and int(match.group("pid")) != os.getpid() \
                and not _alive(int(match.group("pid"))):
            _remove(os.path.join(parent, entry))
            removed.append(entry)
    return removed



def _remove(path: str) -> None:
    if not os.path.lexists(path):
        return
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
def atomic_output(path: str, suffix: str = "", replaces=None, what: str = "a checkpoint of this format",
                  directory: bool = False):
    """Yields a temporary path (file or directory, as the writer makes it) next to `path`; on success it
    replaces `path` in one rename, on any error (or Ctrl-C, or SIGTERM through the CLI's handler) it is
    removed, so no partial output is left. A write that fails for an OS reason (no space, read-only,
    permission) is one ValueError line naming `path`. Temporaries a killed writer left for the same
    destination are removed first.

    An existing `path` is replaced only when `replaces(path)` says it is a checkpoint of the same format
    (or it is an empty file); anything else is refused before writing. `suffix` keeps an extension that
    a writer insists on (Keras's .keras and .weights.h5). directory=True: the writer makes a directory and
    may put its own temporaries beside it (Orbax does), so the yielded path lies inside a hidden holder
    directory that is removed as a whole."""
    _check_destination(path)
    check_replaceable(path, replaces, what)
    remove_stale(path)
    holder = temp_name(path, ".d") if directory else None
    try:
        if holder is not None:
            os.mkdir(holder)
        tmp = os.path.join(holder, os.path.basename(path)) if holder else temp_name(path, suffix)
        try:
            yield tmp
            if not os.path.exists(tmp):
                raise RuntimeError(f"{path}: the writer produced no output")
            _set_mode(tmp, _output_mode(path, os.path.isdir(tmp)))
            check_replaceable(path, replaces, what)  # it may have appeared while we wrote
            if os.path.lexists(path) and os.path.isdir(path) != os.path.isdir(tmp):
                kind = "directory" if os.path.isdir(path) else "file"
                raise ValueError(f"{path}: exists as a {kind}; remove it or choose another name")
            if os.path.isdir(path) and not os.path.islink(path):
                _replace_directory(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            if holder is None and os.path.lexists(tmp):
                _remove(tmp)
    except Exception as err:
        code = write_errno(err)
        if code is None:
            raise
        raise write_error(path, code) from None
    finally:
        if holder is not None:
            _remove(holder)


@contextlib.contextmanager
def atomic_prefix(prefix: str, last: tuple[str, ...] = (), replaces=None, what: str = "a checkpoint"):
    """For a checkpoint made of several files named prefix + ending (TF's .index and .data-*): yields a
    temporary prefix inside a hidden directory beside it; on success each file is renamed into place, the
    endings in `last` (the file that makes the checkpoint visible) after the others. Each destination file
    that exists must pass `replaces` (the format's sniffer of a prefix + ending path). OS write failures are
    one line, as in atomic_output."""
    _check_destination(prefix)
    remove_stale(prefix)
    tmp_dir = temp_name(prefix, ".d")
    try:
        os.mkdir(tmp_dir)
        tmp_prefix = os.path.join(tmp_dir, "ckpt")
        for ending in last:
            check_replaceable(prefix + ending, replaces, what)
        yield tmp_prefix
        endings = [name[len("ckpt"):] for name in os.listdir(tmp_dir) if name.startswith("ckpt")]
        if not endings:
            raise RuntimeError(f"{prefix}: the writer produced no output")
        for ending in endings:
            check_replaceable(prefix + ending, replaces, what)
        for ending in sorted(endings, key=lambda e: e in last):
            _set_mode(tmp_prefix + ending, _output_mode(prefix + ending, False))
            os.replace(tmp_prefix + ending, prefix + ending)
    except Exception as err:
        code = write_errno(err)
        if code is None:
            raise
        raise write_error(prefix, code) from None
    finally:
        _remove(tmp_dir)


def file_size(path: str) -> int:
    """Bytes of a checkpoint: a file, a directory's files, or a TF prefix's .index and .data-* files."""
    if not os.path.exists(path):
        parent, name = os.path.split(os.path.abspath(path))
        parts = [os.path.join(parent, f) for f in os.listdir(parent)
                 if f == name + ".index" or f.startswith(name + ".data-")] if os.path.isdir(parent) else []
        return sum(os.path.getsize(p) for p in parts)
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)
