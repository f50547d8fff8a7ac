"""AlexNet in Flax NNX (NHWC), built from a common.Spec. Imports jax and flax, never torch or tensorflow.

    from alexnet_parity.common import get_spec
    from alexnet_parity.jax_impl import build_model, jit_forward
    model = build_model(get_spec("caffe"), weights)       # canonical weights dict, or None for the variant's init
    model(x_nhwc, rngs=nnx.Rngs(dropout=0))               # train mode, as every NNX module starts: dropout on
    model.eval(); model(x_nhwc)                           # eval mode: deterministic
    logits = jit_forward(model)(x_nhwc)                   # jitted inference, eval mode whatever the model's

The names are imported on first use, so that the engine record (jax_impl.engine) reads without importing JAX.
"""
from alexnet_parity.common.engines import lazy_exports

_EXPORTS = {"grad": ("run_gradients",),
            "model": ("AlexNet", "activations", "build_model", "devices", "export_weights", "jit_forward",
                      "load_weights", "run_activations")}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "run_gradients", "AlexNet", "jit_forward"]
