"""What Keras leaves to each backend, one module per backend (named as keras.backend.backend() names it), each
with the same few functions:

    devices()                           the devices it runs on here: ["cpu"] (+ "gpu")
    device_scope(device)                a context that places the work there (TF32 off on GPUs)
    infer(model)                        x -> eval-mode outputs, compiled where the backend compiles
    vjp(fn, primals, cotangent)         (out, aux, d sum(cotangent * out) / d each primal); fn(*primals) -> (out, aux)
    loss_and_gradients(model, loss_fn, x, y)   one training-mode batch: (loss, d loss / d model.trainable_variables)
    train_step(model, optimizer, loss_fn)      (x, y) -> loss: forward, backward and the optimizer's update
    lrn(portable, x, ...)               LocalResponseNorm's kernel: `portable` (layers.lrn) or a faster own one
    grouped_conv                        a grouped Conv2D faster than Keras's for this backend, or None

and for `alexnet bench` (tf_impl.bench.KerasRunner): bench_setup(gpu, tf32) -> {"versions", "threads"},
bench_inputs, bench_step(model, path, mode, x, y, loss_fn, gpu) -> a step that waits for its result,
bench_matmul, gpu_name, gpu_memory_mb, reset_gpu_peak, gpu_peak_mb.

A backend-specific kernel earns its place only by a paired bench (benchmarks/keras_kernels.py); everything
else is the portable keras.ops code of layers.py and model.py.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import keras


def current() -> ModuleType:
    """The module of the backend this process's Keras runs (Keras fixes it at import, from KERAS_BACKEND)."""
    return importlib.import_module(f"{__name__}.{keras.backend.backend()}")
