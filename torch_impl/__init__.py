"""AlexNet in PyTorch from the framework-neutral spec: `build_model(get_spec("caffe"))`.

NCHW; the module's children are named after the spec's layers, so state_dict keys are the canonical
weight names and torch's layout is the canonical layout. The names below are imported on first use, so
that the engine record (torch_impl.engine) reads without importing torch.
"""
from alexnet_parity.common.engines import lazy_exports

_EXPORTS = {"grad": ("run_gradients",),
            "layers": ("LocalResponseNorm", "MaxPool2d", "PaddedConv2d", "local_response_norm", "max_pool2d"),
            "model": ("AlexNet", "build_model", "export_weights", "init_native", "load_weights"),
            "run": ("activations", "devices", "run_activations")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "run_gradients", "AlexNet", "init_native", "LocalResponseNorm", "PaddedConv2d", "MaxPool2d",
           "local_response_norm", "max_pool2d"]
