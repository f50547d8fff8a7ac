"""canonical: the project's own checkpoint, a .safetensors file (numpy only, no framework).

Layout: tensors "conv1.weight" ... "fc8.bias", float32, conv (out, in/groups, kh, kw), dense (out, in) with
fc6's inputs in C,H,W order. Metadata (all strings): format, variant, input_size, num_classes,
include_top, spec = Spec.to_json(), so the file alone says what it holds, and preprocessing (the input its
weights expect, preprocessing.to_json; the spec's own when the writer is given none). On load the spec is rebuilt
with common.get_spec and its JSON compared with the recorded one. A safetensors file without this
metadata (canonical names only) is read too, its variant inferred from the shapes.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from alexnet_parity.common import Spec

from . import preprocessing as prep
from ._common import atomic_output, check_regular, finish, spec_of_file
from .registry import Format

FORMAT_TAG = "alexnet-parity/canonical/1"


def load(path: str, variant: str | None = None, input_size: int | None = None) -> tuple[Spec, dict]:
    from safetensors import SafetensorError, safe_open

    check_regular(path)
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    shapes = {name: w.shape for name, w in weights.items()}
    spec = spec_of_file(meta, shapes, path, variant, input_size)
    return finish(spec, weights, path)


def metadata(path: str) -> dict:
    """The file's metadata (its header only: no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    check_regular(path)
    try:
        with safe_open(path, framework="numpy") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None


def read_preprocessing(path: str, spec: Spec, **_):
    recorded = metadata(path).get("preprocessing")
    return (prep.from_json(recorded, path), "file") if recorded is not None else None


def write_safetensors(path: str, tensors: dict, metadata: dict) -> None:
    """A safetensors file with its header's keys sorted and the tensors in the given order, so the same
    weights and metadata always give the same bytes (safetensors' own writer orders metadata by a randomly
    seeded hash map): a hub blob's hash, or a digest a user pins, then names the weights, not the run."""
    import json

    header, offset = {}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps({"__metadata__": metadata, **header}, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for array in tensors.values():
            fh.write(memoryview(np.ascontiguousarray(array, dtype="<f4")).cast("B"))


def save(path: str, spec: Spec, weights: dict, preprocessing=None) -> None:
    meta = {"format": FORMAT_TAG, "variant": spec.variant, "input_size": str(spec.input_size),
            "num_classes": str(spec.num_classes), "include_top": str(spec.include_top).lower(),
            "spec": spec.to_json(), "preprocessing": prep.to_json(preprocessing or spec.preprocessing)}
    with atomic_output(path, replaces=sniff, what="a safetensors file") as tmp:
        write_safetensors(tmp, {name: weights[name] for name in spec.weight_shapes()}, meta)


def claims(path: str) -> bool:
    return path.endswith(".safetensors")


def sniff(path: str) -> bool:
    """A safetensors file: an 8-byte little-endian header length that fits the file, then a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{" or not os.path.isfile(path):
        return False
    return 8 + struct.unpack("<Q", head[:8])[0] <= size


FORMAT = Format("canonical", load, save, claims, sniff, frameworks=(), holds="all", files=".safetensors",
                preprocessing=read_preprocessing, keeps_preprocessing=True)
