"""AlexNet as an ONNX graph from the framework-neutral spec, and ONNX Runtime as an engine.

    from alexnet_parity.onnx_impl import build_model, run_activations
    model = build_model(get_spec("caffe"), weights)       # onnx.ModelProto, opset 17, dynamic batch
    acts = run_activations(spec, weights, x_nchw)           # every named layer, through ONNX Runtime

Imports onnx and onnxruntime only (no other framework), and only when a name below is first used, so that
the engine record (onnx_impl.engine) reads without them. NCHW, the canonical layout.
"""
from alexnet_parity.common.engines import lazy_exports

_EXPORTS = {"export": ("FORMAT_TAG", "OPSET", "build_model", "export_weights", "metadata"),
            "read": ("check_against", "read_graph", "signature"),
            "run": ("activations", "devices", "run_activations", "session")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["build_model", "export_weights", "run_activations", "activations", "devices", "session",
           "read_graph", "check_against", "signature", "metadata", "OPSET", "FORMAT_TAG"]
