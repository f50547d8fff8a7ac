"""Keras on JAX: the model's state passed explicitly (stateless_call, stateless_apply) through jax.jit and
jax.vjp, Keras's own pattern for this backend. One kernel of its own: the grouped convolution split by group."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp


def devices() -> list[str]:
    try:
        gpu = bool(jax.devices("gpu"))
    except RuntimeError:  # no GPU backend in this jaxlib
        gpu = False
    return ["cpu"] + (["gpu"] if gpu else [])


@contextlib.contextmanager
def device_scope(device: str):
    if device == "gpu" and "gpu" not in devices():
        raise RuntimeError("JAX sees no GPU")
    with jax.default_device(jax.devices(device)[0]), jax.default_matmul_precision("highest"):
        yield


def check_dtype(dtype: str) -> None:
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype 'float64' needs JAX's 64-bit mode: build and run the model inside "
                         "`with jax.enable_x64(True):`, or set JAX_ENABLE_X64=1 for the whole process")


def dtype_scope(dtype: str):
    """float64 in JAX's 64-bit mode, a context: switched on for the whole process it would make every float32
    user's jnp.asarray(python float) 64-bit."""
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def _values(variables):
    return [v.value for v in variables]


def infer(model):
    fn = jax.jit(lambda trainable, other, x: model.stateless_call(trainable, other, x, training=False)[0])
    return lambda x: fn(_values(model.trainable_variables), _values(model.non_trainable_variables),
                        jnp.asarray(x, dtype=model.input.dtype))


def vjp(fn, primals, cotangent):
    """One jax.jit of the forward and its pullback: one compiled program instead of a dispatch per Keras op."""
    def run(primals, cotangent):
        out, pullback, aux = jax.vjp(fn, *primals, has_aux=True)
        return out, aux, pullback(cotangent.astype(out.dtype))
    out, aux, grads = jax.jit(run)([jnp.asarray(p) for p in primals], jnp.asarray(cotangent))
    return out, aux, list(grads)


def _stateless_loss(model, loss_fn):
    def loss(trainable, other, x, y):
        logits, other = model.stateless_call(trainable, other, x, training=True)
        return loss_fn(logits, y), other
    return jax.value_and_grad(loss, has_aux=True)


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)


def loss_and_gradients(model, loss_fn, x, y):
    (loss, other), grads = jax.jit(_stateless_loss(model, loss_fn))(
        _values(model.trainable_variables), _values(model.non_trainable_variables), jnp.asarray(x), jnp.asarray(y))
    _assign(model.non_trainable_variables, other)  # the dropout seeds move on, as a stateful call moves them
    return loss, grads


def train_step(model, optimizer, loss_fn):
    value_and_grad = _stateless_loss(model, loss_fn)

    @jax.jit
    def step(trainable, other, opt_vars, x, y):
        (loss, other), grads = value_and_grad(trainable, other, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, trainable, other, opt_vars

    def run(x, y):
        loss, trainable, other, opt_vars = step(
            _values(model.trainable_variables), _values(model.non_trainable_variables), _values(optimizer.variables),
            jnp.asarray(x, dtype=model.input.dtype), jnp.asarray(y, dtype=jnp.int32))
        _assign(model.trainable_variables, trainable)
        _assign(model.non_trainable_variables, other)
        _assign(optimizer.variables, opt_vars)
        return loss

    return run


def lrn(portable, x, size, k, beta, scale):
    return portable(x, size, k, beta, scale)


def grouped_conv(x, kernel, strides, padding: str, dilations, groups: int):
    """One convolution per group plus a concatenate, as jax_impl's SplitGroupConv: XLA:CPU runs a
    feature_group_count=2 convolution several times slower than the same work split in two (the paired bench
    in benchmarks/RESULTS.md); each part is keras.ops.conv, so precision and padding are Keras's own."""
    from keras import ops
    parts = zip(ops.split(x, groups, axis=-1), ops.split(kernel, groups, axis=-1))
    return ops.concatenate([ops.conv(xg, kg, strides, padding, "channels_last", dilations) for xg, kg in parts],
                           axis=-1)


# --- alexnet bench (tf_impl.bench.KerasRunner) ---------------------------------------------------------------
# JAX puts arrays on its default device, the GPU when it sees one; every step waits for its result.
def bench_setup(gpu: bool, tf32: str | None) -> dict:
    if gpu:  # matmuls and convolutions: true float32, or TF32 on the tensor cores
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 == "on" else "float32")
    return {"versions": {"jax": jax.__version__}, "threads": None}


def gpu_name() -> str:
    if "gpu" not in devices():
        raise RuntimeError("JAX sees no GPU (install jax[cuda12] or jax[cuda13])")
    return jax.devices("gpu")[0].device_kind


def bench_inputs(x_nhwc, labels):
    return jnp.asarray(x_nhwc), jnp.asarray(labels.astype("int32"))


def bench_step(model, path: str, mode: str, x, y, loss_fn, gpu: bool):
    """path jit: infer is infer() (jax.jit of stateless_call); train one jax.jit of value_and_grad of the
    stateless loss, as train_step's minus the optimizer (the dropout seeds are not carried on: same masks)."""
    if mode == "infer":
        fn = infer(model)
        return lambda: fn(x).block_until_ready()
    grads = jax.jit(_stateless_loss(model, loss_fn))
    trainable, other = _values(model.trainable_variables), _values(model.non_trainable_variables)
    return lambda: jax.block_until_ready(grads(trainable, other, x, y))


def bench_matmul(n: int, gpu: bool):
    a, b = (jax.random.normal(jax.random.key(i), (n, n)) for i in range(2))
    f = jax.jit(jnp.matmul)
    return lambda: f(a, b).block_until_ready()


def gpu_memory_mb() -> float:
    return jax.devices()[0].memory_stats()["bytes_in_use"] / 2**20


def reset_gpu_peak() -> None:
    """JAX cannot reset its peak: a child's later models report the highest of the child so far."""


def gpu_peak_mb() -> float:
    return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
