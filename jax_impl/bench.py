"""jax_impl's runner for `alexnet bench` (alexnet_cli.bench_cmd drives it in its worker process)."""
from __future__ import annotations

import os


class FlaxRunner:
    """jax_impl: the NNX module under jax.jit; NHWC. JAX puts arrays on its default device, the GPU when it
    sees one; every step already waits for its result (block_until_ready)."""

    def __init__(self, device: str = "cpu", tf32: str | None = None):
        import flax
        import jax
        from alexnet_parity import jax_impl
        from flax import nnx
        self.jax, self.nnx, self.impl = jax, nnx, jax_impl
        self.versions = {"jax": jax.__version__, "flax": flax.__version__}
        self.threads = os.cpu_count()
        self.gpu = device == "gpu"
        if self.gpu:  # matmuls and convolutions: true float32, or TF32 on the tensor cores
            jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 == "on" else "float32")

    def check_device(self) -> str | None:
        if not self.gpu:
            return None
        if "gpu" not in self.impl.devices():
            raise RuntimeError("JAX sees no GPU (install jax[cuda12] or jax[cuda13])")
        return self.jax.devices("gpu")[0].device_kind

    def build(self, spec, weights):
        return self.impl.build_model(spec, weights)

    def inputs(self, x, labels):
        return self.jax.numpy.asarray(x.transpose(0, 2, 3, 1)), self.jax.numpy.asarray(labels.astype("int32"))

    def step(self, model, path, mode, x, y):
        jax, nnx = self.jax, self.nnx
        if mode == "infer":
            fn = self.impl.jit_forward(model)
            return lambda: fn(x).block_until_ready()
        graphdef, state = nnx.split(model)

        @jax.jit
        def grads(state, x, y, key):
            def loss(state):
                logits = nnx.merge(graphdef, state)(x, deterministic=False, rngs=nnx.Rngs(dropout=key))
                return -jax.numpy.mean(jax.numpy.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
            return jax.grad(loss)(state)
        key = jax.random.key(0)
        return lambda: jax.block_until_ready(grads(state, x, y, key))

    def matmul(self, n: int):
        jnp = self.jax.numpy
        a, b = (jnp.asarray(self.jax.random.normal(self.jax.random.key(i), (n, n))) for i in range(2))
        f = self.jax.jit(jnp.matmul)
        return lambda: f(a, b).block_until_ready()

    def memory_mb(self) -> float | None:
        """MB in use on the GPU; None on the CPU. JAX cannot reset its peak, so a child's later models report the
        highest of the child so far (the bench builds one model, or a pair, per child)."""
        return self.jax.devices()[0].memory_stats()["bytes_in_use"] / 2**20 if self.gpu else None

    def reset_peak(self) -> None:
        pass

    def peak_mb(self) -> float:
        return self.jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
