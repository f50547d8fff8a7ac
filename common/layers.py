"""The layer vocabulary of every AlexNet, as frozen dataclasses.

A variant declares its layers with the *rule* each one follows (padding, rounding, init); the spec
resolves them for one input size, filling in the fields below the `# resolved` marks. Frameworks read
only resolved fields, so no impl ever depends on a framework's own idea of 'same' or of rounding.
Shapes are (C, H, W) for spatial layers and (F,) after flatten.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

Shape = tuple[int, ...]
Padding = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


@dataclass(frozen=True)
class Init:
    """One initialisation rule. kind: normal | truncated_normal (std, cut at 2 std) | constant |
    fan_in_uniform (PyTorch's default: U(-1/sqrt(fan_in), +1/sqrt(fan_in))) | glorot_uniform."""

    kind: str
    value: float = 0.0

    def __str__(self) -> str:
        if self.kind in ("normal", "truncated_normal"):
            return f"{self.kind}(std={self.value:g})"
        if self.kind == "constant":
            return f"constant({self.value:g})"
        return self.kind


@dataclass(frozen=True)
class Layer:
    name: str
    # resolved
    in_shape: Shape = ()
    out_shape: Shape = ()

    kind: ClassVar[str] = "layer"
    has_params: ClassVar[bool] = False


@dataclass(frozen=True)
class Conv(Layer):
    out_channels: int = 0
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    rounding: str = "floor"  # floor | ceil (cuda-convnet) | same (TensorFlow SAME)
    groups: int = 1
    weight_init: Init = Init("normal", 0.01)
    bias_init: Init = Init("constant", 0.0)
    # resolved
    in_channels: int = 0
    padding: Padding = ((0, 0), (0, 0))

    kind: ClassVar[str] = "conv"
    has_params: ClassVar[bool] = True

    @property
    def weight_shape(self) -> Shape:
        return (self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel)

    @property
    def fan_in(self) -> int:
        return self.in_channels // self.groups * self.kernel * self.kernel

    @property
    def fan_out(self) -> int:
        return self.out_channels * self.kernel * self.kernel  # as torch and Keras count it


@dataclass(frozen=True)
class ReLU(Layer):
    kind: ClassVar[str] = "relu"


@dataclass(frozen=True)
class LRN(Layer):
    """b_c = a_c / (k + scale * sum_{|j-c| <= size//2} a_j^2) ** beta, scale = alpha/size or alpha."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0
    alpha_over_n: bool = True

    kind: ClassVar[str] = "lrn"

    @property
    def scale(self) -> float:
        return self.alpha / self.size if self.alpha_over_n else self.alpha


@dataclass(frozen=True)
class MaxPool(Layer):
    """Windows that run past the input see only real pixels (padding is -inf)."""

    kernel: int = 3
    stride: int = 2
    pad: int = 0
    rounding: str = "floor"  # floor (PyTorch, TF VALID) | ceil (Caffe, cuda-convnet)
    # resolved
    padding: Padding = ((0, 0), (0, 0))

    kind: ClassVar[str] = "maxpool"


@dataclass(frozen=True)
class AdaptiveAvgPool(Layer):
    """PyTorch's AdaptiveAvgPool2d: bin i covers [floor(i*in/out), ceil((i+1)*in/out))."""

    output_size: int = 6

    kind: ClassVar[str] = "adaptive_avgpool"


@dataclass(frozen=True)
class Flatten(Layer):
    """Flattens (C, H, W) in C,H,W order: the order canonical fc6 weights use."""

    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class Dropout(Layer):
    rate: float = 0.5  # probability of dropping, in every framework's convention but TF-slim's

    kind: ClassVar[str] = "dropout"


@dataclass(frozen=True)
class Dense(Layer):
    out_features: int = 0
    weight_init: Init = Init("normal", 0.01)
    bias_init: Init = Init("constant", 0.0)
    # resolved
    in_features: int = 0

    kind: ClassVar[str] = "dense"
    has_params: ClassVar[bool] = True

    @property
    def weight_shape(self) -> Shape:
        return (self.out_features, self.in_features)

    @property
    def fan_in(self) -> int:
        return self.in_features

    @property
    def fan_out(self) -> int:
        return self.out_features
