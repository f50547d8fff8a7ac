"""AlexNet in PyTorch from the framework-neutral spec: `build_model(get_spec("caffe"))`.

NCHW; the module's children are named after the spec's layers, so state_dict keys are the canonical
weight names and torch's layout is the canonical layout.
"""
from .layers import LocalResponseNorm, MaxPool2d, PaddedConv2d, local_response_norm, max_pool2d
from .model import AlexNet, build_model, export_weights, init_native, load_weights
from .run import activations, devices, run_activations

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "AlexNet", "init_native", "LocalResponseNorm", "PaddedConv2d", "MaxPool2d",
           "local_response_norm", "max_pool2d"]
