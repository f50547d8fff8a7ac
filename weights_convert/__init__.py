"""Canonical AlexNet weights <-> every checkpoint format, bit-exact.

    from alexnet_parity.weights_convert import load, save
    spec, weights = load("alexnet-owt-7be5be79.pth")          # format from the name, variant from the shapes
    save("alexnet.keras", spec, weights)                       # any format that can hold the variant

Formats (one module each, each stating its exact layout and defining its registry.Format record, registered
below in one line): canonical (.safetensors), torch (torch_impl's state_dict, .pt/.pth), torchvision
(torchvision's key names, .pt/.pth), keras (.weights.h5, .keras), flax (Orbax directory, .msgpack), caffe
(.caffemodel, optional .prototxt), slim (TF-slim alexnet_v2 checkpoint prefix),
onnx (.onnx, read by its graph's structure). A framework is imported
only by the format that needs it. Every error about a file is a ValueError (FileNotFoundError for a missing
one) whose one line names the file and the tensor; writers write to a temporary name beside the destination
and rename it at the end.
"""
from __future__ import annotations

import os

import numpy as np

from alexnet_parity.common import VARIANTS, Preprocessing, Spec

from . import caffe, canonical, flax_fmt, hub, keras_fmt, onnx_fmt, slim, torch_fmt, torchvision
from .registry import FORMATS, Format, can_hold, get_format, guess_format, register

# One line per format; the order is guess_format's tie-break (see registry).
register(canonical.FORMAT)
register(hub.FORMAT)
register(torch_fmt.FORMAT)
register(torchvision.FORMAT)
register(keras_fmt.FORMAT)
register(flax_fmt.FORMAT)
register(caffe.FORMAT)
register(slim.FORMAT)
register(onnx_fmt.FORMAT)



def load_as(path, fmt: str | None = None, variant: str | None = None, *, input_size: int | None = None,
            **options) -> tuple[Spec, dict[str, np.ndarray], str]:
    """load(), also returning the format it read (torch or torchvision for a .pth, by its keys)."""
    path = os.fspath(path)
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    guessed = fmt is None
    fmt = guess_format(path, reading=True) if guessed else get_format(fmt).name
    if not get_format(fmt).exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if guessed and get_format(fmt).pick is not None:  # what the file holds decides (torch or torchvision)
        fmt = get_format(fmt).pick(path, options)
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


def preprocessing_of(path, spec: Spec, fmt: str | None = None, **options) -> tuple[Preprocessing, str]:
    """(the preprocessing the weights at `path` expect, where that comes from: "file" when the file records
    it, "format" when it is its format's convention, "variant" when it is spec's variant's own). options as
    for load (caffe: prototxt=PATH)."""
    path = os.fspath(path)
    fmt = guess_format(path, reading=True) if fmt is None else get_format(fmt).name
    reader = get_format(fmt).preprocessing
    found = reader(path, spec, **options) if reader is not None else None
    return found if found is not None else (spec.preprocessing, "variant")


def save(path, spec: Spec, weights: dict, fmt: str | None = None, *, preprocessing: Preprocessing | None = None,
         **options) -> str:
    """Write canonical weights in a format (guessed from the path when None); returns the format.
    preprocessing: the input the weights expect (default: the spec's), recorded where the format can hold it.
    options go to the format (caffe: container="layer" | "layers", deploy=True)."""
    path = os.fspath(path)
    fmt = guess_format(path, reading=False) if fmt is None else get_format(fmt).name
    if not can_hold(fmt, spec.variant):
        raise ValueError(f"{path}: the {fmt} format holds {get_format(fmt).holds} only, not {spec.variant}")
    spec.check_weights(weights, "weights to save")
    weights = {name: np.ascontiguousarray(weights[name], dtype=np.float32) for name in spec.weight_shapes()}
    if get_format(fmt).keeps_preprocessing:
        options["preprocessing"] = preprocessing
    get_format(fmt).save(path, spec, weights, **options)
    return fmt


__all__ = ["load", "load_as", "save", "preprocessing_of", "guess_format", "get_format", "can_hold", "register", "FORMATS", "Format"]
