"""Any resolved AlexNet spec plus canonical weights as an ONNX ModelProto.

Every geometry decision is the spec's: convolutions and max pools carry the spec's explicit (before, after)
pads (Caffe's and cuda-convnet's round-up pooling included), so no ceil_mode and no auto_pad, whose runtime
support has had bugs. ONNX LRN divides its alpha by size, so the op gets alpha = scale * size: the paper's
unscaled 1e-4 becomes 5e-4 and Caffe's 1e-4 stays 1e-4. Tensor names are the spec's layer names, so any
layer can be made a graph output for per-layer parity.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from alexnet_parity.common import (LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, MaxPool, ReLU, Spec,
                                   adaptive_pool_is_uniform, adaptive_pool_matrix, init_weights)
from alexnet_parity.common.dtypes import check_dtype

OPSET = 17
FORMAT_TAG = "alexnet-parity/onnx/1"
INPUT = "input"
BATCH = "N"
# What ONNX Runtime's CPU kernels run (measured, onnxruntime 1.32): float16 everywhere (where a kernel has no
# float16 form ORT inserts float32 casts itself); float64 has no Conv, LRN or AveragePool, bfloat16 almost no op.
DTYPES = ("float32", "float16")


def _pads(padding) -> list[int]:
    (top, bottom), (left, right) = padding
    return [top, left, bottom, right]  # ONNX: every axis' begin, then every axis' end


def _layer_nodes(layer, x: str, initializers: list, dtype=np.float32) -> list:
    """The nodes of one layer, reading tensor `x` and writing the tensor named after the layer."""
    y = layer.name
    if isinstance(layer, Conv):
        return [helper.make_node("Conv", [x, f"{y}.weight", f"{y}.bias"], [y], name=y,
                                 kernel_shape=[layer.kernel] * 2, strides=[layer.stride] * 2,
                                 pads=_pads(layer.padding), group=layer.groups, dilations=[1, 1])]
    if isinstance(layer, Dense):
        return [helper.make_node("Gemm", [x, f"{y}.weight", f"{y}.bias"], [y], name=y, transB=1)]
    if isinstance(layer, ReLU):
        return [helper.make_node("Relu", [x], [y], name=y)]
    if isinstance(layer, LRN):
        lrn = dict(size=layer.size, alpha=layer.scale * layer.size, beta=layer.beta, bias=layer.k)
        if dtype == np.float32:
            return [helper.make_node("LRN", [x], [y], name=y, **lrn)]
        # its sum of squares in float32 (0-255 pixels square past float16's 65504), rounded back once
        return [helper.make_node("Cast", [x], [f"{y}/in"], name=f"{y}/in", to=TensorProto.FLOAT),
                helper.make_node("LRN", [f"{y}/in"], [f"{y}/out"], name=y, **lrn),
                helper.make_node("Cast", [f"{y}/out"], [y], name=f"{y}/out",
                                 to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))]
    if isinstance(layer, MaxPool):
        return [helper.make_node("MaxPool", [x], [y], name=y, kernel_shape=[layer.kernel] * 2,
                                 strides=[layer.stride] * 2, pads=_pads(layer.padding))]
    if isinstance(layer, AdaptiveAvgPool):
        _, h, w = layer.in_shape
        out = layer.output_size
        if h == w and adaptive_pool_is_uniform(h, out):
            k = h // out
            return [helper.make_node("AveragePool", [x], [y], name=y, kernel_shape=[k, k], strides=[k, k])]
        # PyTorch's bins overlap here: pooled = Mh @ x @ Mw^T with the exact bin-averaging matrices
        mh, mw = adaptive_pool_matrix(h, out, dtype), adaptive_pool_matrix(w, out, dtype)
        initializers += [numpy_helper.from_array(mw.T.copy(), f"{y}.cols"),
                         numpy_helper.from_array(mh, f"{y}.rows")]
        return [helper.make_node("MatMul", [x, f"{y}.cols"], [f"{y}/cols"], name=f"{y}/cols"),
                helper.make_node("MatMul", [f"{y}.rows", f"{y}/cols"], [y], name=y)]
    if isinstance(layer, Flatten):
        return [helper.make_node("Flatten", [x], [y], name=y, axis=1)]
    if isinstance(layer, Dropout):
        return [helper.make_node("Identity", [x], [y], name=y)]  # inference
    raise TypeError(f"no ONNX op for layer kind {layer.kind!r}")


def _value_info(name: str, shape, dtype=np.float32):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), [BATCH, *shape])


def metadata(spec: Spec) -> dict[str, str]:
    return {"format": FORMAT_TAG, "variant": spec.variant, "input_size": str(spec.input_size),
            "num_classes": str(spec.num_classes), "include_top": str(spec.include_top).lower(),
            "spec": spec.to_json(), "preprocessing": json.dumps(spec.to_dict()["preprocessing"])}


def build_model(spec: Spec, weights: dict | None = None, *, seed: int | None = None, outputs=None,
                check: bool = True, dtype="float32") -> onnx.ModelProto:
    """The ONNX model of `spec` with canonical `weights` inline, or else weights drawn by the
    variant's init rule (numpy, `seed`). outputs: None (the last layer), "all" (every named layer, in
    order) or layer names. The batch dimension is dynamic ("N"). check runs onnx.checker and shape
    inference (skipped above protobuf's 2 GB, where the checker needs the file). dtype: "float32" or
    "float16", of the weights, the input, every op but LRN (float32 between two Casts) and the outputs;
    ONNX Runtime's CPU kernels run neither float64 (no Conv, LRN, AveragePool) nor bfloat16, so those are refused."""
    dtype = check_dtype(dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: ONNX Runtime's CPU kernels have no {dtype} Conv; "
                         f"onnx_impl builds {' and '.join(DTYPES)}")
    from alexnet_parity.weights_convert.pretrained import resolve_weights  # weights="bvlc_alexnet": the cache
    weights = resolve_weights(weights, spec)
    weights = init_weights(spec, seed=seed) if weights is None else weights
    spec.check_weights(weights)
    names = [layer.name for layer in spec.layers]
    if outputs is None:
        outputs = [names[-1]]
    elif outputs == "all":
        outputs = names
    else:
        unknown = [o for o in outputs if o not in names]
        if unknown:
            raise ValueError(f"{spec.describe()} has no layer {unknown[0]!r}; its layers are {', '.join(names)}")
        outputs = [n for n in names if n in outputs]
    initializers = [numpy_helper.from_array(np.ascontiguousarray(weights[n], dtype=dtype), n)
                    for n in spec.weight_shapes()]
    nodes, x = [], INPUT
    for layer in spec.layers:
        nodes += _layer_nodes(layer, x, initializers, dtype)
        x = layer.name
    graph = helper.make_graph(
        nodes, f"alexnet_{spec.variant}",
        [_value_info(INPUT, spec.input_shape, dtype)],
        [_value_info(n, spec.layer(n).out_shape, dtype) for n in outputs], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="alexnet-parity", doc_string=f"AlexNet {spec.describe()}")
    model.ir_version = 8  # opset 17's IR version: readable by every ONNX Runtime since 1.12
    helper.set_model_props(model, metadata(spec))
    if check and model.ByteSize() < (2 << 30) - (1 << 20):
        onnx.checker.check_model(model, full_check=False)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def export_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Canonical float32 weights of an ONNX AlexNet, read from its graph's structure (not its names)."""
    from .read import read_graph

    return read_graph(model, "ONNX model").materialize()
