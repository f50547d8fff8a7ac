"""Spec: one variant resolved for one input size, with its counts, shapes and weight checks."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .geometry import resolve_1d
from .layers import AdaptiveAvgPool, Conv, Dense, Flatten, Layer, MaxPool
from .variants import VARIANTS, Preprocessing

MAX_INPUT_SIZE = 4096


@dataclass(frozen=True)
class Spec:
    variant: str
    input_size: int
    num_classes: int
    include_top: bool
    layers: tuple[Layer, ...]  # resolved for input_size
    preprocessing: Preprocessing
    in_channels: int = 3

    # --- lookups -------------------------------------------------------------------------------
    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.variant} has no layer {name!r}")

    @property
    def param_layers(self) -> tuple[Conv | Dense, ...]:
        return tuple(layer for layer in self.layers if layer.has_params)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.layers[-1].out_shape

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical names and shapes, in layer order: conv (out, in/groups, kh, kw), dense (out, in)."""
        shapes = {}
        for layer in self.param_layers:
            shapes[f"{layer.name}.weight"] = layer.weight_shape
            shapes[f"{layer.name}.bias"] = (layer.weight_shape[0],)
        return shapes

    def replace_layers(self, kind: str, **changes) -> "Spec":
        """A hand-modified copy with `changes` applied to every layer of `kind`, e.g. ("dropout", rate=0.0)
        for step-equality tests, or ("lrn", alpha_over_n=False) to build a deliberately wrong port."""
        return dataclasses.replace(self, layers=tuple(
            dataclasses.replace(layer, **changes) if layer.kind == kind else layer for layer in self.layers))

    # --- counts ----------------------------------------------------------------------------------
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {layer.name: layer.out_shape for layer in self.layers}

    def layer_params(self, layer: Layer) -> int:
        if not layer.has_params:
            return 0
        return int(np.prod(layer.weight_shape)) + layer.weight_shape[0]

    def layer_macs(self, layer: Layer) -> int:
        """Multiply-accumulates of the conv and dense layers (biases, pooling and LRN not counted)."""
        if not layer.has_params:
            return 0
        positions = int(np.prod(layer.out_shape[1:])) if isinstance(layer, Conv) else 1
        return positions * int(np.prod(layer.weight_shape))

    def param_count(self) -> int:
        return sum(self.layer_params(layer) for layer in self.layers)

    def mac_count(self) -> int:
        return sum(self.layer_macs(layer) for layer in self.layers)

    def neuron_count(self) -> int:
        """Output units of the conv and dense layers: the paper's '650,000 neurons'."""
        return sum(int(np.prod(layer.out_shape)) for layer in self.param_layers)

    # --- weights ---------------------------------------------------------------------------------
    def check_weights(self, weights: dict, source: str = "weights") -> None:
        """ValueError naming the tensor when a canonical dict does not fit this spec."""
        expected = self.weight_shapes()
        missing = [k for k in expected if k not in weights]
        if missing:
            raise ValueError(f"{source}: missing tensor {missing[0]!r} for {self.variant}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        extra = [k for k in weights if k not in expected]
        if extra:
            raise ValueError(f"{source}: unexpected tensor {extra[0]!r} for {self.variant}")
        for key, shape in expected.items():
            got = tuple(np.shape(weights[key]))
            if got != shape:
                raise ValueError(f"{source}: tensor {key!r} has shape {got}, {self.describe()} expects {shape}"
                                 + self._size_hint(key, got))
            if not np.all(np.isfinite(weights[key])):
                raise ValueError(f"{source}: tensor {key!r} holds NaN or infinite values")

    def _size_hint(self, key: str, got: tuple[int, ...]) -> str:
        if key != "fc6.weight" or len(got) != 2:
            return ""
        sizes = input_sizes_for(self.variant, got[1])
        if not sizes:
            return ""
        made = f"{sizes[0]}" if len(sizes) == 1 else f"between {sizes[0]} and {sizes[-1]}"
        return f"; the checkpoint was made for input size {made}, not {self.input_size} (pass input_size)"

    # --- description ------------------------------------------------------------------------------
    def describe(self) -> str:
        parts = [self.variant, f"input {self.input_size}"]
        if self.num_classes != VARIANTS[self.variant].num_classes:
            parts.append(f"{self.num_classes} classes")
        if not self.include_top:
            parts.append("no top")
        return " ".join(parts[:1]) + " (" + ", ".join(parts[1:]) + ")"

    def overrides(self) -> dict:
        return {"input_size": self.input_size, "num_classes": self.num_classes, "include_top": self.include_top}

    def to_dict(self) -> dict:
        """Everything, as plain JSON types: what a checkpoint's metadata records."""
        def layer_dict(layer):
            d = {"kind": layer.kind}
            d.update(dataclasses.asdict(layer))
            return d
        return {"variant": self.variant, **self.overrides(), "in_channels": self.in_channels,
                "preprocessing": _preprocessing_dict(self.preprocessing),
                "layers": [layer_dict(layer) for layer in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _preprocessing_dict(pre: Preprocessing) -> dict:
    """A spec's preprocessing as plain JSON types; without mean_image when it has none (every variant's), so
    the files written before it existed record the same spec."""
    d = dataclasses.asdict(pre)
    if d["mean_image"] is None:
        del d["mean_image"]
    return d


def _resolve_layer(layer: Layer, shape: tuple[int, ...]) -> Layer:
    """Fill in a layer's resolved fields for an input of `shape`."""
    if isinstance(layer, (Conv, MaxPool)):
        c, h, w = shape
        try:
            top, bottom, oh = resolve_1d(h, layer.kernel, layer.stride, layer.pad, layer.rounding)
            left, right, ow = resolve_1d(w, layer.kernel, layer.stride, layer.pad, layer.rounding)
        except ValueError as err:
            raise ValueError(f"{layer.name}: {err}") from None
        padding = ((top, bottom), (left, right))
        if isinstance(layer, Conv):
            if c % layer.groups or layer.out_channels % layer.groups:
                raise ValueError(f"{layer.name}: {c} -> {layer.out_channels} channels do not split in {layer.groups} groups")
            return dataclasses.replace(layer, in_shape=shape, in_channels=c, padding=padding,
                                       out_shape=(layer.out_channels, oh, ow))
        return dataclasses.replace(layer, in_shape=shape, padding=padding, out_shape=(c, oh, ow))
    if isinstance(layer, AdaptiveAvgPool):
        return dataclasses.replace(layer, in_shape=shape, out_shape=(shape[0], layer.output_size, layer.output_size))
    if isinstance(layer, Flatten):
        return dataclasses.replace(layer, in_shape=shape, out_shape=(int(np.prod(shape)),))
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise ValueError(f"{layer.name}: dense layer needs a flat input, got {shape}")
        return dataclasses.replace(layer, in_shape=shape, in_features=shape[0], out_shape=(layer.out_features,))
    return dataclasses.replace(layer, in_shape=shape, out_shape=shape)


def _resolve(variant: str, input_size: int, num_classes: int, include_top: bool) -> tuple[Layer, ...]:
    declared = VARIANTS[variant].layers
    if not include_top:
        declared = declared[:[layer.name for layer in declared].index("flatten")]
    elif num_classes != VARIANTS[variant].num_classes:
        declared = tuple(dataclasses.replace(layer, out_features=num_classes) if layer.name == "fc8" else layer
                         for layer in declared)
    shape: tuple[int, ...] = (3, input_size, input_size)
    resolved = []
    for layer in declared:
        layer = _resolve_layer(layer, shape)
        resolved.append(layer)
        shape = layer.out_shape
    return tuple(resolved)


@lru_cache(maxsize=None)
def smallest_input_size(variant: str) -> int:
    for size in range(1, MAX_INPUT_SIZE + 1):
        try:
            _resolve(variant, size, 1, True)
            return size
        except ValueError:
            continue
    raise ValueError(f"{variant}: no input size up to {MAX_INPUT_SIZE} fits")


@lru_cache(maxsize=256)
def get_spec(variant: str, *, input_size: int | None = None, num_classes: int | None = None,
             include_top: bool = True) -> Spec:
    """The resolved spec of a variant; overrides input_size, num_classes, include_top."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    input_size = v.input_size if input_size is None else int(input_size)
    num_classes = v.num_classes if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not 1 <= input_size <= MAX_INPUT_SIZE:
        raise ValueError(f"input_size must be between 1 and {MAX_INPUT_SIZE}, got {input_size}")
    try:
        layers = _resolve(variant, input_size, num_classes, include_top)
    except ValueError as err:
        raise ValueError(f"{variant} cannot take a {input_size}x{input_size} input ({err}); "
                         f"the smallest input size it takes is {smallest_input_size(variant)}") from None
    return Spec(variant=variant, input_size=input_size, num_classes=num_classes, include_top=include_top,
                layers=layers, preprocessing=v.preprocessing)


def _flat_features(variant: str, input_size: int) -> int:
    """How many features the variant's conv part hands fc6 at this input size."""
    return int(np.prod(get_spec(variant, input_size=input_size, include_top=False).output_shape))


def input_sizes_for(variant: str, fc6_in: int) -> range:
    """The input sizes at which `variant` feeds fc6 exactly `fc6_in` features (empty when none): the
    feature count never falls as the input grows, so a binary search finds the first and the last."""
    lo, hi = smallest_input_size(variant), MAX_INPUT_SIZE

    def first_at_least(target):
        a, b = lo, hi + 1
        while a < b:
            mid = (a + b) // 2
            if _flat_features(variant, mid) >= target:
                b = mid
            else:
                a = mid + 1
        return a

    start = first_at_least(fc6_in)
    if start > hi or _flat_features(variant, start) != fc6_in:
        return range(0)
    return range(start, first_at_least(fc6_in + 1))
