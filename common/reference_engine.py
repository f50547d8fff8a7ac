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


def set_threads(n: int) -> int | None:
    """numpy's BLAS threads (its tensordot and einsum run there), through the OpenBLAS numpy ships: its own
    set/get calls, looked up among the libraries already loaded. None where numpy's BLAS is another."""
    import ctypes
    import glob
    import os
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*.so*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", "_64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter and getter:
                    setter(ctypes.c_int(n))
                    return int(getter())
    return None


ENGINE = Engine(name="reference", package=__name__, layout="NCHW", color="black", oracle=True,
                threads=f"{__name__}:set_threads")
