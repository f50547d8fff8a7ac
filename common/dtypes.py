"""The floating-point types an engine's build_model(dtype=...) takes, by the names users type, and the numpy
type its activations come back in. numpy only: each engine maps a name to its framework's own type."""
from __future__ import annotations

import numpy as np

DTYPES = ("float32", "float64", "bfloat16", "float16")
REDUCED = ("bfloat16", "float16")  # LRN sums their squares in float32 (0-255 pixels overflow float16's 65504)


def check_dtype(dtype, option: str = "dtype") -> str:
    """The dtype's name if it is one of DTYPES, else a one-line ValueError naming the option."""
    name = getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"{option} {dtype!r} is not one of {', '.join(DTYPES)}")
    return name


def output_dtype(dtype: str) -> type:
    """What run_activations returns for a model of `dtype`: float64 as float64; the rest as float32, which
    holds bfloat16 and float16 values exactly and which numpy (without ml_dtypes) always has."""
    return np.float64 if dtype == "float64" else np.float32
