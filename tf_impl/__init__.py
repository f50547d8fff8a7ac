"""AlexNet as a Keras model on the TensorFlow backend (NHWC), built from a common.Spec. The names below are
imported on first use, so that the engine record (tf_impl.engine) reads without importing TensorFlow."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from alexnet_parity.common.engines import lazy_exports  # noqa: E402

_EXPORTS = {"grad": ("run_gradients",),
            "model": ("AlexNet", "activations", "build_model", "devices", "export_weights", "load_weights",
                      "run_activations", "spec_of")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "run_gradients", "spec_of", "AlexNet"]
