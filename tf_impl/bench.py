"""tf_impl's runner for `alexnet bench` (alexnet_cli.bench_cmd drives it in its worker process), on whichever
backend this process's Keras runs: the step, the inputs, the matmul roof and the GPU's memory come from that
backend's module (tf_impl.backends: tensorflow graph/xla, jax jit, torch eager)."""
from __future__ import annotations

import os

import numpy as np

from alexnet_parity.common import get_spec


class KerasRunner:
    """tf_impl's Keras model, NHWC, timed by its backend's bench_step."""

    def __init__(self, device: str = "cpu", tf32: str | None = None):
        # the bench forks a child per model and CUDA starts in each: Keras's torch backend asks
        # torch.cuda.is_available() at import, which must not start CUDA in this parent (NVML answers instead)
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        import keras
        from alexnet_parity import tf_impl
        from alexnet_parity.tf_impl import backends
        from alexnet_parity.tf_impl.train import loss_fn
        self.keras, self.impl, self.loss_fn = keras, tf_impl, loss_fn
        self.backend = backends.current()
        self.gpu = device == "gpu"
        setup = self.backend.bench_setup(self.gpu, tf32)
        self.versions = {**setup["versions"], "keras": keras.__version__}
        self.threads = setup["threads"] or os.cpu_count()

    def check_device(self) -> str | None:
        return self.backend.gpu_name() if self.gpu else None

    def build(self, spec, weights):
        full = get_spec(spec.variant, **spec.overrides())
        model = self.impl.build_model(full, weights)
        if spec == full:
            return model
        # tf_impl rebuilds from the variant's name, so a modified spec (LRN removed) is made here: the same
        # layers, called in order, skipping the ones the spec dropped
        keep = {layer.name for layer in spec.layers}
        x = inputs = self.keras.Input(model.input_shape[1:])
        for layer in model.layers:
            if isinstance(layer, self.keras.layers.InputLayer):
                continue
            if layer.name in keep or layer.name.removesuffix("_pad") in keep:
                x = layer(x)
        return self.keras.Model(inputs, x)

    def inputs(self, x, labels):
        return self.backend.bench_inputs(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), labels)

    def step(self, model, path, mode, x, y):
        return self.backend.bench_step(model, path, mode, x, y, self.loss_fn, self.gpu)

    def matmul(self, n: int):
        return self.backend.bench_matmul(n, self.gpu)

    def memory_mb(self) -> float | None:
        return self.backend.gpu_memory_mb() if self.gpu else None

    def reset_peak(self) -> None:
        self.backend.reset_gpu_peak()

    def peak_mb(self) -> float:
        return self.backend.gpu_peak_mb()
