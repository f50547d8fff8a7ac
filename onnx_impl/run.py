"""ONNX Runtime as an engine: the spec's ONNX graph run with every named layer as an output."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from alexnet_parity.common import Spec
from alexnet_parity.common.dtypes import check_dtype

from .export import INPUT, build_model

PROVIDERS = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}
THREADS: int | None = None  # every session's intra- and inter-op threads when set (threads.set_threads); else ORT's


def devices() -> list[str]:
    """The devices this ONNX Runtime can run on, by the parity suite's names."""
    available = ort.get_available_providers()
    return [d for d, p in PROVIDERS.items() if p in available]


def session(model, device: str = "cpu", threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession on `device` for a ModelProto, serialized bytes or a path."""
    if device not in PROVIDERS:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if device not in devices():
        raise RuntimeError(f"ONNX Runtime has no {PROVIDERS[device]} here (providers: "
                           f"{', '.join(ort.get_available_providers())})")
    options = ort.SessionOptions()
    threads = threads or THREADS
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    if not isinstance(model, (str, bytes)):
        model = model.SerializeToString()
    return ort.InferenceSession(model, options, providers=[PROVIDERS[device]])


def session_threads(sess: ort.InferenceSession) -> int:
    return sess.get_session_options().intra_op_num_threads


def activations(sess: ort.InferenceSession, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Every graph output of one run, by name (the spec's layer names for our exports)."""
    names = [o.name for o in sess.get_outputs()]
    source = sess.get_inputs()[0]
    x = np.ascontiguousarray(x_nchw, dtype=np.float16 if source.type == "tensor(float16)" else np.float32)
    values = sess.run(names, {source.name: x})
    return dict(zip(names, values))


def run_activations(spec: Spec, weights: dict, x_nchw: np.ndarray, device: str = "cpu",
                    dtype: str = "float32") -> dict[str, np.ndarray]:
    """Export `spec` with canonical `weights` in `dtype` ("float32" or "float16"; every layer an output), run
    it in ONNX Runtime on `device`, and return every activation as float32 numpy, NCHW (ONNX's layout is the
    canonical one)."""
    dtype = check_dtype(dtype)
    x = np.asarray(x_nchw, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != spec.input_shape:
        raise ValueError(f"input has shape {x.shape}; {spec.describe()} takes "
                         f"(N, {', '.join(map(str, spec.input_shape))}) NCHW")
    # check=False: ONNX Runtime validates the graph it loads; onnx.checker and shape inference (~2 s at 224, each a
    # serialization of the whole model) are for the files `export`/`convert` write, and tests/test_onnx.py runs them
    model = build_model(spec, weights, outputs="all", dtype=dtype, check=False)
    acts = activations(session(model, device), x)
    return {layer.name: acts[layer.name].astype(np.float32, copy=False) for layer in spec.layers}


__all__ = ["devices", "session", "activations", "run_activations", "INPUT"]
