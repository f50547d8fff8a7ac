"""The preprocessing a checkpoint's weights expect, as it travels in the files' metadata (numpy only).

The weights, not the variant, decide the input: BVLC's Caffe files want BGR pixels in 0-255 minus the mean,
torchvision's RGB in 0-1 with ImageNet mean/std, whatever net definition they are loaded into. So every
format that can hold metadata records a common.Preprocessing (canonical safetensors metadata, hub
config.json, .weights.h5 attributes, ONNX metadata_props, the comment header of the deploy .prototxt a
caffemodel is written with), as the JSON `to_json` makes. A file that records none falls back to its
format's convention (caffe: Caffe's; torchvision: torchvision's), then to the variant's own.

The mean is a per-channel (pixel) mean: BVLC's files were trained minus a 256x256 mean image, which the
record approximates by that image's per-channel mean (see pretrained.CHECKPOINTS' preprocessing_note).
"""
from __future__ import annotations

import dataclasses
import json
import math

from alexnet_parity.common import VARIANTS, Preprocessing, Spec

KEYS = tuple(f.name for f in dataclasses.fields(Preprocessing))
MEAN_KIND = "pixel"  # what `mean` is: a per-channel mean subtracted from every pixel


def to_dict(pre: Preprocessing) -> dict:
    return {**dataclasses.asdict(pre), "mean_kind": MEAN_KIND}


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
    if d.get("mean_kind", MEAN_KIND) != MEAN_KIND:
        raise bad(f"has mean_kind {d.get('mean_kind')!r}; only a per-channel {MEAN_KIND!r} mean is supported")
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
    return Preprocessing(color_order=d["color_order"], pixel_range=number("pixel_range", d["pixel_range"], True),
                         mean=triple("mean"), std=triple("std", positive=True), resize=size("resize"),
                         crop=size("crop"), source=d["source"])


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
    std = "" if all(s == 1.0 for s in pre.std) else " / std " + "/".join(f"{s:g}" for s in pre.std)
    return f"{pre.color_order} {scale}, minus {mean}{std}, resize {pre.resize}, crop {pre.crop}"
