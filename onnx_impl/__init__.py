"""AlexNet as an ONNX graph from the framework-neutral spec, and ONNX Runtime as an engine.

    from alexnet_parity.onnx_impl import build_model, run_activations
    model = build_model(get_spec("caffe"), weights)       # onnx.ModelProto, opset 17, dynamic batch
    acts = run_activations(spec, weights, x_nchw)           # every named layer, through ONNX Runtime

Imports onnx and onnxruntime only (no other framework). NCHW, the canonical layout.
"""
from .export import FORMAT_TAG, OPSET, build_model, export_weights, metadata
from .read import check_against, read_graph, signature
from .run import activations, devices, run_activations, session

__all__ = ["build_model", "export_weights", "run_activations", "activations", "devices", "session",
           "read_graph", "check_against", "signature", "metadata", "OPSET", "FORMAT_TAG"]
