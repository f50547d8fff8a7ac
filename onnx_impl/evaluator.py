"""onnx.reference's ReferenceEvaluator as a second ONNX evaluator: the ONNX spec's own Python implementation of
each op, run on the spec's ONNX graph. It is a check on ONNX Runtime (a graph both get right is right by the
ONNX standard, not by one runtime's kernels), not a fast engine: numpy, one thread, float32.

Its LRN is wrong in onnx up to 1.23 (onnx/onnx#7805, fixed by onnx/onnx#8331): the window loop runs over the
batch axis instead of the channels, so with batch < channels every channel past the batch size is left
unnormalized. `session` therefore gives the evaluator the spec's LRN (`LRN` below) where the installed one
fails `stock_lrn_is_right()`; tests/test_onnx_paths.py shows the stock op's failure.
"""
from __future__ import annotations

import functools

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from alexnet_parity.common import Spec

from .export import INPUT, build_model, export_weights  # the engine's model is the spec's own ONNX graph


class LRN(OpRun):
    """ONNX LRN as the operator's documentation defines it: y = x / (bias + alpha/size * sum of x^2 over the
    channels [c - floor((size-1)/2), c + ceil((size-1)/2)]) ** beta, channels outside [0, C) counting 0."""
    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        before, after = (size - 1) // 2, size // 2
        squares = np.pad(x * x, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
        window = sum(squares[:, i:i + x.shape[1]] for i in range(size))
        return ((x / (bias + (alpha / size) * window) ** beta).astype(x.dtype),)


@functools.cache
def stock_lrn_is_right() -> bool:
    """Whether the installed onnx.reference computes LRN over the channels (one image of three channels)."""
    x = np.arange(1, 4, dtype=np.float32).reshape(1, 3, 1, 1)
    (stock,) = ReferenceEvaluator(_lrn_graph()).run(None, {"x": x})
    (ours,) = ReferenceEvaluator(_lrn_graph(), new_ops=[LRN]).run(None, {"x": x})
    return bool(np.allclose(stock, ours, rtol=1e-6, atol=0))


def _lrn_graph():
    from onnx import TensorProto, helper

    node = helper.make_node("LRN", ["x"], ["y"], size=3, alpha=3.0, beta=1.0, bias=1.0)
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 1, 1]) for n in ("x", "y")]
    return helper.make_model(helper.make_graph([node], "lrn", io[:1], io[1:]),
                             opset_imports=[helper.make_opsetid("", 17)])


def devices() -> list[str]:
    return ["cpu"]


def session(model) -> ReferenceEvaluator:
    """A ReferenceEvaluator for a ModelProto, with the spec's LRN where the installed one is wrong."""
    return ReferenceEvaluator(model, new_ops=None if stock_lrn_is_right() else [LRN])


def run_activations(spec: Spec, weights: dict, x_nchw: np.ndarray, device: str = "cpu") -> dict[str, np.ndarray]:
    """Every named layer's float32 output, NCHW, from the spec's ONNX graph run by onnx.reference."""
    if device != "cpu":
        raise ValueError(f"onnx.reference runs on the cpu only, not {device!r}")
    x = np.asarray(x_nchw, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != spec.input_shape:
        raise ValueError(f"input has shape {x.shape}; {spec.describe()} takes "
                         f"(N, {', '.join(map(str, spec.input_shape))}) NCHW")
    model = build_model(spec, weights, outputs="all")
    names = [layer.name for layer in spec.layers]
    return dict(zip(names, session(model).run(names, {INPUT: x})))


__all__ = ["LRN", "devices", "session", "run_activations", "stock_lrn_is_right", "build_model", "export_weights"]
