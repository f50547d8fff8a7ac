"""Canonical AlexNet weights <-> every checkpoint format, bit-exact.

    from alexnet_parity.weights_convert import load, save
    spec, weights = load("alexnet-owt-7be5be79.pth")          # format from the name, variant from the shapes
    save("alexnet.keras", spec, weights)                       # any format that can hold the variant

Formats (one module each, each stating its exact layout): canonical (.safetensors), torch (torch_impl's
state_dict, .pt/.pth), torchvision (torchvision's key names, .pt/.pth), keras (.weights.h5, .keras),
flax (Orbax directory, .msgpack), caffe (.caffemodel, optional .prototxt), slim (TF-slim alexnet_v2
checkpoint prefix), onnx (.onnx, read by its graph's structure). A framework is imported only by the format
that needs it. Every error about a file is a ValueError (FileNotFoundError for a missing one) whose one line
names the file and the tensor; writers write to a temporary name beside the destination and rename it at the end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from alexnet_parity.common import VARIANTS, Spec

from . import caffe, canonical, flax_fmt, keras_fmt, onnx_fmt, slim, torch_fmt, torchvision


@dataclass(frozen=True)
class Format:
    name: str
    load: Callable  # (path, variant=None, input_size=None, **options) -> (spec, weights)
    save: Callable  # (path, spec, weights, **options) -> None
    claims: Callable  # (path) -> bool: does this path name a file of this format?
    frameworks: tuple[str, ...]  # the Python packages it imports
    holds: str  # which variants it can hold
    files: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("canonical", canonical.load, canonical.save, canonical.claims, (), "all", ".safetensors"),
    Format("torch", torch_fmt.load, torch_fmt.save, torch_fmt.claims, ("torch",), "all", ".pt, .pth"),
    Format("torchvision", torchvision.load, torchvision.save, torchvision.claims, ("torch",), "all", ".pt, .pth"),
    Format("keras", keras_fmt.load, keras_fmt.save, keras_fmt.claims, ("tensorflow", "keras"), "all",
           ".weights.h5, .keras"),
    Format("flax", flax_fmt.load, flax_fmt.save, flax_fmt.claims, ("jax", "flax", "orbax"), "all",
           "Orbax directory (.orbax or any existing one), .msgpack"),
    Format("caffe", caffe.load, caffe.save, caffe.claims, (), "all", ".caffemodel (+ .prototxt)"),
    Format("slim", slim.load, slim.save, slim.claims, ("tensorflow",), "slim-v2", "checkpoint prefix (*.ckpt*)"),
    Format("onnx", onnx_fmt.load, onnx_fmt.save, onnx_fmt.claims, ("onnx",), "all", ".onnx (+ .onnx.data)"),
)}

# The framework whose model --verify builds for a format's weights (None: the float64 numpy reference)
FRAMEWORK_OF = {"canonical": None, "torch": "torch", "torchvision": "torch", "keras": "keras",
                "flax": "flax", "caffe": None, "slim": "keras", "onnx": None}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def can_hold(fmt: str, variant: str) -> bool:
    holds = get_format(fmt).holds
    return holds == "all" or variant in holds.split(",")


def guess_format(path: str, reading: bool = True) -> str:
    """The format a path names: by its ending, or for reading by what exists there (an Orbax directory, a
    checkpoint prefix with its .index). .pt/.pth read as torch; load() then tells torchvision by its keys."""
    path = os.fspath(path)
    if reading and os.path.isdir(path):
        if flax_fmt.is_orbax_dir(path):
            return "flax"
        if os.path.isfile(os.path.join(path, "checkpoint")):
            return "slim"
        raise ValueError(f"{path}: a directory that is neither an Orbax checkpoint nor a TensorFlow "
                         f"checkpoint directory; pass --from")
    for name in ("canonical", "torch", "keras", "flax", "caffe", "slim", "onnx"):
        if FORMATS[name].claims(path):
            return name
    if reading and os.path.isfile(path + ".index"):
        return "slim"
    raise ValueError(f"{path}: cannot tell the format from the name; pass --{'from' if reading else 'to'} "
                     f"(one of {', '.join(FORMATS)})")


def load_as(path, fmt: str | None = None, variant: str | None = None, *, input_size: int | None = None,
            **options) -> tuple[Spec, dict[str, np.ndarray], str]:
    """load(), also returning the format it read (torch or torchvision for a .pth, by its keys)."""
    path = os.fspath(path)
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    guessed = fmt is None
    fmt = guess_format(path, reading=True) if guessed else get_format(fmt).name
    if not os.path.exists(path) and not (fmt == "slim" and os.path.exists(slim.checkpoint_prefix(path) + ".index")):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if fmt == "torch" and guessed:  # one read; the keys say which of the two layouts it is
        state = torch_fmt.read_state_dict(path)
        fmt = "torchvision" if torch_fmt.is_torchvision_style(state) else "torch"
        options["state"] = state
    spec, weights = get_format(fmt).load(path, variant=variant, input_size=input_size, **options)
    return spec, weights, fmt


def load(path, fmt: str | None = None, variant: str | None = None, *, input_size: int | None = None,
         **options) -> tuple[Spec, dict[str, np.ndarray]]:
    """(spec, canonical float32 weights) of a checkpoint. fmt is guessed from the path when None; the
    variant is read from the file where it says, inferred from the shapes where not, and variant=
    overrides both. input_size overrides the size the file records or fc6 implies. options go to the
    format (caffe: prototxt=PATH)."""
    spec, weights, _ = load_as(path, fmt, variant, input_size=input_size, **options)
    return spec, weights


def save(path, spec: Spec, weights: dict, fmt: str | None = None, **options) -> str:
    """Write canonical weights in a format (guessed from the path when None); returns the format.
    options go to the format (caffe: container="layer" | "layers")."""
    path = os.fspath(path)
    fmt = guess_format(path, reading=False) if fmt is None else get_format(fmt).name
    if not can_hold(fmt, spec.variant):
        raise ValueError(f"{path}: the {fmt} format holds {get_format(fmt).holds} only, not {spec.variant}")
    spec.check_weights(weights, "weights to save")
    weights = {name: np.ascontiguousarray(weights[name], dtype=np.float32) for name in spec.weight_shapes()}
    get_format(fmt).save(path, spec, weights, **options)
    return fmt


__all__ = ["load", "load_as", "save", "guess_format", "get_format", "can_hold", "FORMATS", "FRAMEWORK_OF",
           "Format"]
