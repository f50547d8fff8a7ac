"""AlexNet in Flax NNX (NHWC), built from a common.Spec. Imports jax and flax, never torch or tensorflow.

    from alexnet_parity.common import get_spec
    from alexnet_parity.jax_impl import build_model, jit_forward
    model = build_model(get_spec("caffe"), weights)       # canonical weights dict, or None for the variant's init
    logits = jit_forward(model)(x_nhwc)                   # jitted inference; model(x) runs eagerly
    model.train(); model(x_nhwc, rngs=nnx.Rngs(dropout=0))  # dropout on
"""
from .model import (AlexNet, activations, build_model, devices, export_weights, jit_forward, load_weights,
                    run_activations)

__all__ = ["build_model", "export_weights", "load_weights", "activations", "run_activations", "devices",
           "AlexNet", "jit_forward"]
