"""torch: the state_dict of a torch_impl model, saved with torch.save (.pt / .pth).

Layout: torch_impl names its modules after the spec's layers, so the keys ARE the canonical names
("conv1.weight" ... "fc8.bias") and torch's layout is the canonical layout; no transposes. The file holds
no spec: the variant is inferred from the shapes (or given). Reading uses torch.load(weights_only=True),
which refuses pickles that hold code. A checkpoint wrapped as {"state_dict": ...} or {"model": ...}, or
saved from DataParallel ("module.") or torch.compile ("_orig_mod.") is unwrapped (see unwrap_state_dict).
Only torch is imported, never torch_impl.
"""
from __future__ import annotations

import zipfile

import numpy as np

from alexnet_parity.common import Spec

from ._common import atomic_output, check_regular, finish, resolve_spec, starts_with
from .registry import Format

WRAPPER_KEYS = ("state_dict", "model")  # training scripts' {"epoch": ..., "state_dict": ...} containers
KEY_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DistributedDataParallel, torch.compile


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A torch.save'd state_dict as {key: numpy array}, unwrapped; errors name the file and the key."""
    import pickle

    import torch

    check_regular(path)
    try:
        # no mmap: a corrupt zip entry could map past the end of the file and fault on first touch
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: refused to unpickle: the file holds objects other than tensors and plain "
                         f"containers (code?), and weights_only loading does not run them ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError, IndexError,
            UnicodeDecodeError, zipfile.BadZipFile, OverflowError, MemoryError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first}") from None
    state = unwrap_state_dict(obj, path)
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if not value.is_floating_point():
            raise ValueError(f"{path}: tensor {key!r} has dtype {value.dtype}; weights must be floating point")
        value = value.detach()
        if value.dtype not in (torch.float32, torch.float64, torch.float16):
            value = value.float()  # bfloat16 and friends: numpy has no such dtype; the cast is exact
        arrays[key] = value.numpy()
    return arrays


def unwrap_state_dict(obj, path: str) -> dict:
    """The state_dict inside a checkpoint. Rules, applied in order:
    1. a dict holding non-tensor values and a "state_dict" or "model" key (checked in that order) whose
       value is a dict: that value (repeated once more for a nested wrapper);
    2. when every key starts with "module." (DataParallel) or "_orig_mod." (torch.compile): strip it.
    """
    import torch

    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
    for _ in range(2):
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not obj:
        raise ValueError(f"{path}: the state_dict is empty")
    for prefix in KEY_PREFIXES:
        if all(isinstance(k, str) and k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    bad = next((k for k in obj if not isinstance(k, str)), None)
    if bad is not None:
        raise ValueError(f"{path}: key {bad!r} is not a string; not a state_dict")
    return obj


def is_torchvision_style(keys) -> bool:
    """True when the keys look like torchvision's Sequential indices rather than canonical names."""
    return any(k.startswith(("features.", "net.", "classifier.")) for k in keys)


def load(path: str, variant: str | None = None, input_size: int | None = None,
         state: dict | None = None) -> tuple[Spec, dict]:
    state = read_state_dict(path) if state is None else state
    if is_torchvision_style(state):
        key = next(k for k in state if k.startswith(("features.", "net.", "classifier.")))
        raise ValueError(f"{path}: key {key!r} is torchvision's naming, not torch_impl's canonical names; "
                         f"read it with --from torchvision")
    spec = resolve_spec({k: v.shape for k, v in state.items()}, path, variant=variant, input_size=input_size)
    return finish(spec, state, path)


def save(path: str, spec: Spec, weights: dict) -> None:
    save_state_dict(path, {name: weights[name] for name in spec.weight_shapes()})


def save_state_dict(path: str, arrays: dict[str, np.ndarray]) -> None:
    from collections import OrderedDict

    import torch

    state = OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in arrays.items())
    with atomic_output(path, replaces=sniff, what="a torch checkpoint") as tmp, open(tmp, "wb") as fh:
        recorder = _WriteRecorder(fh)
        try:
            torch.save(state, recorder)
        except RuntimeError:
            if recorder.error is not None:  # torch reports a failed write as "unexpected pos": say why
                raise recorder.error from None
            raise


class _WriteRecorder:
    """A file torch.save writes through, keeping the OSError of a failed write (no space, too large),
    which torch's zip writer swallows and reports only as a position mismatch."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        return self.fh.flush()


def claims(path: str) -> bool:
    return path.endswith((".pt", ".pth"))


ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: str) -> bool:
    """A torch.save file: a zip archive (torch >= 1.6) or a legacy pickle (protocol 2 magic)."""
    return starts_with(path, ZIP_MAGIC, b"\x80\x02")


def pick(path: str, options: dict) -> str:
    """torch or torchvision, by the keys of the one read; the state goes to load in options."""
    options["state"] = read_state_dict(path)
    return "torchvision" if is_torchvision_style(options["state"]) else "torch"


FORMAT = Format("torch", load, save, claims, sniff, frameworks=("torch",), holds="all", files=".pt, .pth", pick=pick)
