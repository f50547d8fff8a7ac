"""The preprocessing a checkpoint's weights expect, as it travels in the files' metadata (numpy only).

The weights, not the variant, decide the input: BVLC's Caffe files want BGR pixels in 0-255 minus the mean,
torchvision's RGB in 0-1 with ImageNet mean/std, whatever net definition they are loaded into. So every
format that can hold metadata records a common.Preprocessing (canonical safetensors metadata, hub
config.json, .weights.h5 attributes, ONNX metadata_props, the comment header of the deploy .prototxt a
caffemodel is written with), as the JSON `to_json` makes. A file that records none falls back to its
format's convention (caffe: Caffe's; torchvision: torchvision's), then to the variant's own.

The mean is a per-channel (pixel) mean, or a mean image: BVLC's files were trained minus a 256x256 mean
image (ilsvrc_2012_mean.binaryproto), which the per-channel mean approximates. A record with mean_kind
"image" names its image exactly (shape and the SHA-256 of its float32 values, common.MeanImage) and keeps
the per-channel mean as `mean`; `alexnet predict` and `eval` take the image itself with --mean-image FILE
(a .binaryproto or a .npy, read_mean_image) and subtract it the Caffe way (augment.mean_patch).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re

import numpy as np

from alexnet_parity.common import VARIANTS, MeanImage, Preprocessing, Spec

KEYS = tuple(f.name for f in dataclasses.fields(Preprocessing) if f.name != "mean_image")
# what is subtracted: "pixel", the per-channel `mean`; "image", the mean image the record's mean_image names
MEAN_KINDS = ("pixel", "image")


def to_dict(pre: Preprocessing) -> dict:
    d = {k: v for k, v in dataclasses.asdict(pre).items() if k != "mean_image"}
    if pre.mean_image is None:
        return {**d, "mean_kind": "pixel"}
    return {**d, "mean_kind": "image",
            "mean_image": {"shape": list(pre.mean_image.shape), "sha256": pre.mean_image.sha256}}


def to_json(pre: Preprocessing) -> str:
    return json.dumps(to_dict(pre), sort_keys=True)


def from_dict(d, source: str) -> Preprocessing:
    """A Preprocessing from a file's record, checked: one-line ValueError naming the file and the field."""
    def bad(what):
        return ValueError(f"{source}: its recorded preprocessing {what}")

    if not isinstance(d, dict):
        raise bad("is not a JSON object")
    missing = [k for k in KEYS if k not in d]
    if missing:
        raise bad(f"lacks {missing[0]!r}")
    kind = d.get("mean_kind", "pixel")
    if kind not in MEAN_KINDS:
        raise bad(f"has mean_kind {kind!r}, not 'pixel' (a per-channel mean) or 'image' (a mean image)")
    if d["color_order"] not in ("RGB", "BGR"):
        raise bad(f"has color_order {d['color_order']!r}, not RGB or BGR")

    def number(key, v, positive=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise bad(f"has {key} {v!r}, not a {'positive ' if positive else ''}finite number")
        return float(v)

    def triple(key, positive=False):
        v = d[key]
        if not isinstance(v, (list, tuple)) or len(v) != 3:
            raise bad(f"has {key} {v!r}, not 3 numbers")
        return tuple(number(key, x, positive) for x in v)

    def size(key):
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 1 << 16:
            raise bad(f"has {key} {v!r}, not a positive whole number of pixels")
        return v

    if not isinstance(d["source"], str):
        raise bad("has a source that is not a string")
    def mean_image():
        m = d.get("mean_image")
        if kind == "pixel":
            if m is not None:
                raise bad("has a mean_image but mean_kind 'pixel'")
            return None
        if not isinstance(m, dict) or not isinstance(m.get("sha256"), str) or not SHA256.fullmatch(m["sha256"]):
            raise bad(f"has mean_kind 'image' but mean_image {m!r}, not {{shape: [3, H, W], sha256: 64 hex digits}}")
        shape = m.get("shape")
        if (not isinstance(shape, list) or len(shape) != 3 or shape[0] != 3
                or any(isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 1 << 16 for v in shape)):
            raise bad(f"has mean_image shape {shape!r}, not [3, H, W]")
        return MeanImage(shape=tuple(shape), sha256=m["sha256"])

    return Preprocessing(color_order=d["color_order"], pixel_range=number("pixel_range", d["pixel_range"], True),
                         mean=triple("mean"), std=triple("std", positive=True), resize=size("resize"),
                         crop=size("crop"), source=d["source"], mean_image=mean_image())


SHA256 = re.compile("[0-9a-f]{64}")


def from_json(text, source: str) -> Preprocessing:
    try:
        d = json.loads(text)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: its recorded preprocessing is not JSON") from None
    return from_dict(d, source)


def convention(variant: str, spec: Spec, source: str) -> Preprocessing:
    """What a format whose files all come from one tool assumes of a file that records nothing (caffe: Caffe's,
    torchvision: torchvision's): that tool's variant's preprocessing. Its resize and crop give the ratio of the
    crop to the image (227 of 256); another input size keeps that ratio (training.augment.base_size)."""
    return dataclasses.replace(VARIANTS[variant].preprocessing, source=source)


CAFFE_CONVENTION = "Caffe's convention for a caffemodel (caffe.io.Transformer: BGR, 0-255, minus the mean)"
TORCHVISION_CONVENTION = "torchvision's convention for its checkpoints (RGB, 0-1, ImageNet mean/std)"


def describe(pre: Preprocessing) -> str:
    scale = "0-1" if pre.pixel_range == 1.0 else f"0-{pre.pixel_range:g}"
    mean = "/".join(f"{m:g}" for m in pre.mean)
    if pre.mean_image is not None:
        c, h, w = pre.mean_image.shape
        mean = f"the {c}x{h}x{w} mean image sha256 {pre.mean_image.sha256[:12]} (per channel {mean})"
    std = "" if all(s == 1.0 for s in pre.std) else " / std " + "/".join(f"{s:g}" for s in pre.std)
    return f"{pre.color_order} {scale}, minus {mean}{std}, resize {pre.resize}, crop {pre.crop}"


# --- the mean image -----------------------------------------------------------------------------------------

def mean_image_of(array: np.ndarray) -> MeanImage:
    """What names a mean image exactly: its shape and the SHA-256 of its values as float32 little-endian, C
    order (so the same image as .binaryproto or .npy has one digest)."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return MeanImage(shape=tuple(int(n) for n in data.shape), sha256=hashlib.sha256(data.tobytes()).hexdigest())


MAX_MEAN_IMAGE = 64 << 20


def read_mean_image(path: str) -> np.ndarray:
    """float32 (3, H, W) of a mean image file: Caffe's .binaryproto (one BlobProto, 1x3xHxW, as
    compute_image_mean writes it; read with our protobuf wire reader) or a .npy of shape (3, H, W) or
    (1, 3, H, W) (numpy, allow_pickle=False). Its channels are the weights' order and units (Caffe's: BGR,
    0-255). A one-line ValueError naming the file when it is anything else."""
    from ._common import check_regular

    what = f"--mean-image {path}"
    if os.fspath(path).endswith(".npy"):
        if check_regular(path, what) > MAX_MEAN_IMAGE:
            raise ValueError(f"{what}: over the {MAX_MEAN_IMAGE >> 20} MiB a mean image needs")
        array = _read_npy(path, what)
    else:
        from .caffe import read_binaryproto
        array = read_binaryproto(path, what)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ValueError(f"{what}: holds {getattr(array, 'dtype', type(array).__name__)} values, not numbers")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3 or min(array.shape) < 1:
        raise ValueError(f"{what}: has shape {'x'.join(map(str, array.shape))}; a mean image is 3xHxW "
                         f"(or 1x3xHxW, as Caffe's binaryproto)")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: holds NaN or infinite values")
    return array


def _read_npy(path: str, what: str) -> np.ndarray:
    """A .npy file's array, no pickles (numpy's own reader, not np.load, which would open a zip as .npz), and no
    larger than the file holds (a header may declare any shape)."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(fh)
            if dtype.hasobject:
                raise ValueError("it holds Python objects (a pickle), which are never loaded")
            if math.prod(shape) * dtype.itemsize > os.fstat(fh.fileno()).st_size:
                raise ValueError(f"its header declares {'x'.join(map(str, shape))} {dtype} values, more than it holds")
            fh.seek(0)
            return fmt.read_array(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{what}: not a numpy .npy array ({str(err).splitlines()[0][:200]})") from None


def with_mean_image(pre: Preprocessing, array: np.ndarray, path: str) -> Preprocessing:
    """pre subtracting the mean image `array` (read from path): checked against the image the record names,
    when it names one (a one-line ValueError naming the file where its shape or digest differ); `mean`
    becomes the image's per-channel mean."""
    got = mean_image_of(array)
    want = pre.mean_image
    if want is not None and got.shape != want.shape:
        raise ValueError(f"--mean-image {path}: is {'x'.join(map(str, got.shape))}, but the weights' record "
                         f"names a {'x'.join(map(str, want.shape))} mean image")
    if want is not None and got.sha256 != want.sha256:
        raise ValueError(f"--mean-image {path}: its sha256 is {got.sha256}, but the weights' record names the "
                         f"mean image {want.sha256}: another mean image")
    mean = tuple(float(m) for m in np.asarray(array, np.float64).mean(axis=(1, 2)))
    return dataclasses.replace(pre, mean=mean, mean_image=got)
