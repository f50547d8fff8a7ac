"""AlexNet as a Keras 3 model (NHWC), built from a common.Spec, on whichever backend Keras runs: TensorFlow, JAX
or PyTorch (KERAS_BACKEND, read by Keras once per process). The registry knows it as three engines, keras,
keras-jax and keras-torch (tf_impl.engine). The names below are imported on first use, so that the engine
records read without importing Keras or any framework."""
from alexnet_parity.common.engines import lazy_exports

_EXPORTS = {"grad": ("run_gradients",),
            "model": ("AlexNet", "activations", "build_model", "devices", "export_weights", "load_weights",
                      "run_activations", "spec_of")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "run_gradients", "spec_of", "AlexNet"]
