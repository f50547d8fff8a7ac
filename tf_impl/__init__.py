"""AlexNet as a Keras model on the TensorFlow backend (NHWC), built from a common.Spec."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .model import (AlexNet, activations, build_model, devices, export_weights, load_weights,  # noqa: E402
                    run_activations, spec_of)

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "spec_of", "AlexNet"]
