"""Keras on TensorFlow: tf.function graphs (XLA where asked), GradientTape, and two kernels that a paired bench
shows faster than the portable code on this backend (benchmarks/keras_kernels.py): LRN compiled on its own
with XLA, and TF's own grouped convolution."""
from __future__ import annotations

import contextlib
import functools

import tensorflow as tf


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if tf.config.list_physical_devices("GPU") else [])


@contextlib.contextmanager
def device_scope(device: str):
    if device == "gpu":
        if "gpu" not in devices():
            raise RuntimeError("TensorFlow sees no GPU")
        tf.config.experimental.enable_tensor_float_32_execution(False)
    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        yield


def check_dtype(dtype: str) -> None:
    """Every dtype of common.dtypes builds and runs on TensorFlow's CPU kernels."""


def dtype_scope(dtype: str):
    return contextlib.nullcontext()


def infer(model):
    """One cached tf.function (XLA where Keras's jit_compile resolves to it: on GPUs, not on CPUs): what
    predict() runs, without its tf.data pipeline, which costs ~20% more CPU at batch 32."""
    fn = tf.function(lambda x: model(x, training=False), jit_compile=model.jit_compile, reduce_retracing=True)
    return lambda x: fn(tf.convert_to_tensor(x, dtype=model.input.dtype))


def vjp(fn, primals, cotangent):
    primals = [tf.convert_to_tensor(p) for p in primals]
    with tf.GradientTape() as tape:
        tape.watch(primals)
        out, aux = fn(*primals)
        loss = tf.reduce_sum(out * tf.cast(cotangent, out.dtype))
    return out, aux, tape.gradient(loss, primals, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def loss_and_gradients(model, loss_fn, x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(model(x, training=True), y)
    return loss, tape.gradient(loss, model.trainable_variables)


def train_step(model, optimizer, loss_fn):
    """One tf.function (XLA where the model's jit_compile resolves to it, as infer does)."""
    variables = model.trainable_variables
    h, w, c = model.input.shape[1:]

    @tf.function(jit_compile=model.jit_compile, input_signature=[
        tf.TensorSpec([None, h, w, c], model.input.dtype), tf.TensorSpec([None], tf.int32)])
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(model(x, training=True), y)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return lambda x, y: step(tf.convert_to_tensor(x, dtype=model.input.dtype), tf.cast(y, tf.int32))


# --- kernels ------------------------------------------------------------------------------------------
def _in_xla_context() -> bool:
    """True while a jit_compile function (e.g. a Keras train step on GPU) is being traced. There the
    nested compiled function must not be used: XLA then constant-folds the next MaxPoolGrad for
    minutes. The enclosing XLA compile fuses the plain ops anyway."""
    try:
        from tensorflow.python.ops import control_flow_util
        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):  # private API gone: a nested compile is still correct
        return False


@functools.cache
def _compiled(portable):
    return tf.function(portable, jit_compile=True)


def lrn(portable, x, size, k, beta, scale):
    """The portable LRN compiled on its own: XLA fuses its shifted slices into one pass over x, on 2 CPU cores
    ~3x less CPU than tf.nn.local_response_normalization or a (C, C) band matmul, as exact (~3e-7)."""
    return (portable if _in_xla_context() else _compiled(portable))(x, size, k, beta, scale)


@functools.cache
def _native_grouped_conv() -> bool:
    """TF's own grouped Conv2D runs everywhere oneDNN does (the x86 default). Without oneDNN, grappler
    fuses conv + bias + relu into an Eigen kernel that refuses groups, so groups must run one by one."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # private API gone: the always-correct path
        return False


def grouped_conv(x, kernel, strides, padding: str, dilations, groups: int):
    """A grouped Conv2D: TF's native op where it works (~7% less CPU on the paper net than one convolution
    per group, bit-identical), else one convolution per group; per-group gradients either way (TF has no
    grouped Conv2DBackpropFilter on CPU without oneDNN)."""
    strides, dilations, padding = [1, *strides, 1], [1, *dilations, 1], padding.upper()
    options = dict(strides=strides, padding=padding, dilations=dilations)

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx, dk = [], []
            for xg, kg, dyg in zip(*(tf.split(t, groups, -1) for t in (x, kernel, dy))):
                dx.append(tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(xg), filter=kg, out_backprop=dyg,
                                                         **options))
                dk.append(tf.raw_ops.Conv2DBackpropFilter(input=xg, filter_sizes=tf.shape(kg), out_backprop=dyg,
                                                          **options))
            return tf.concat(dx, -1), tf.concat(dk, -1)

        if _native_grouped_conv():
            return tf.nn.conv2d(x, kernel, **options), grad
        parts = zip(tf.split(x, groups, -1), tf.split(kernel, groups, -1))
        return tf.concat([tf.nn.conv2d(xg, kg, **options) for xg, kg in parts], -1), grad

    return conv(x, tf.convert_to_tensor(kernel))


# --- alexnet bench (tf_impl.bench.KerasRunner) ---------------------------------------------------------------
# TensorFlow places everything on the first GPU when it sees one; there a step ends by fetching its (small)
# result, which waits for the GPU.
def bench_setup(gpu: bool, tf32: str | None) -> dict:
    """Set the GPU's float32 precision; returns the framework's version and its CPU thread count."""
    if gpu:
        tf.config.experimental.enable_tensor_float_32_execution(tf32 == "on")
    return {"versions": {"tensorflow": tf.__version__},
            "threads": tf.config.threading.get_intra_op_parallelism_threads() or None}


def gpu_name() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise RuntimeError("TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


def bench_inputs(x_nhwc, labels):
    return tf.constant(x_nhwc), tf.constant(labels.astype("int32"))


def bench_step(model, path: str, mode: str, x, y, loss_fn, gpu: bool):
    """path graph: a tf.function; xla: the same with jit_compile=True. train: forward + GradientTape backward."""
    wait = (lambda t: t.numpy()) if gpu else (lambda t: t)
    if mode == "infer":
        fn = tf.function(lambda x: model(x, training=False), jit_compile=path == "xla")
        return lambda: wait(fn(x))

    @tf.function(jit_compile=path == "xla")
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(model(x, training=True), y)
        grads = tape.gradient(loss, model.trainable_variables)
        return tf.add_n([tf.reduce_sum(g) for g in grads]) if gpu else grads  # one scalar to fetch
    return lambda: wait(train(x, y))


def bench_matmul(n: int, gpu: bool):
    a, b = (tf.random.normal((n, n)) for _ in range(2))
    if gpu:
        return lambda: tf.linalg.matmul(a, b)[0, 0].numpy()
    return lambda: tf.linalg.matmul(a, b)


def gpu_memory_mb() -> float:
    return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20


def reset_gpu_peak() -> None:
    tf.config.experimental.reset_memory_stats("GPU:0")


def gpu_peak_mb() -> float:
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
