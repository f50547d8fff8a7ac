"""The float64 numpy reference as an engine: the oracle `alexnet parity` measures every framework against, and
what `alexnet convert --verify` runs for a format no framework reads natively (canonical, caffe)."""
from __future__ import annotations

import numpy as np

from .engines import Engine
from .reference import reference_forward


def devices() -> list[str]:
    return ["cpu"]


def run_activations(spec, weights: dict, x_nchw, device: str = "cpu") -> dict[str, np.ndarray]:
    """Every named layer's float64 output for a NCHW batch (the reference's own precision)."""
    if device != "cpu":
        raise ValueError(f"the numpy reference runs on the cpu only, not {device!r}")
    return reference_forward(spec, weights, np.asarray(x_nchw))


ENGINE = Engine(name="reference", package=__name__, layout="NCHW", color="black", oracle=True)
