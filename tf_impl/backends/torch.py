"""Keras on PyTorch: eager execution with autograd. No kernel of its own: the portable code is what runs."""
from __future__ import annotations

import contextlib

import torch


def devices() -> list[str]:
    return ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


@contextlib.contextmanager
def device_scope(device: str):
    """Keras's torch backend puts every tensor on its default device, the GPU when torch sees one: "cpu" is
    named (keras.device) as "gpu" is, so that a CPU run stays on the CPU on a machine with a GPU."""
    import keras
    if device == "gpu" and "gpu" not in devices():
        raise RuntimeError("torch sees no GPU")
    if device == "gpu":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with keras.device("cuda:0" if device == "gpu" else "cpu"):
        yield


def check_dtype(dtype: str) -> None:
    """float64 is refused: Keras's torch backend computes a float64 matmul (Dense) in float32
    (keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE, JAX's 32-bit promotion), ~3e-6 off, so a "float64"
    model there would not be one."""
    if dtype == "float64":
        raise ValueError("dtype 'float64': Keras's torch backend computes float64 matmuls in float32; "
                         "use the keras (TensorFlow) or keras-jax engine, or torch_impl, for float64")


def dtype_scope(dtype: str):
    return contextlib.nullcontext()


def _tensor(x, dtype):
    import keras
    return keras.ops.convert_to_tensor(x, dtype=keras.backend.standardize_dtype(dtype))


def infer(model):
    def run(x):
        with torch.no_grad():
            return model(_tensor(x, model.input.dtype), training=False)
    return run


def vjp(fn, primals, cotangent):
    from keras import ops
    primals = [ops.convert_to_tensor(p).detach().requires_grad_(True) for p in primals]
    out, aux = fn(*primals)
    grads = torch.autograd.grad(out, primals, grad_outputs=_tensor(cotangent, out.dtype), allow_unused=True)
    return out, aux, [torch.zeros_like(p) if g is None else g for p, g in zip(primals, grads)]


def loss_and_gradients(model, loss_fn, x, y):
    variables = [v.value for v in model.trainable_variables]
    loss = loss_fn(model(_tensor(x, model.input.dtype), training=True), _tensor(y, "int32"))
    return loss, torch.autograd.grad(loss, variables)


def train_step(model, optimizer, loss_fn):
    def step(x, y):
        loss, grads = loss_and_gradients(model, loss_fn, x, y)
        with torch.no_grad():
            optimizer.apply(grads, model.trainable_variables)
        return loss.detach()
    return step


def lrn(portable, x, size, k, beta, scale):
    return portable(x, size, k, beta, scale)


grouped_conv = None


# --- alexnet bench (tf_impl.bench.KerasRunner) ---------------------------------------------------------------
# Keras puts every tensor on torch's GPU when it sees one; there each step ends with a synchronize.
def bench_setup(gpu: bool, tf32: str | None) -> dict:
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32 == "on"
    return {"versions": {"torch": torch.__version__}, "threads": torch.get_num_threads()}


def gpu_name() -> str:
    if "gpu" not in devices():
        raise RuntimeError("torch sees no GPU (torch.cuda.is_available() is False)")
    return torch.cuda.get_device_name()


def bench_inputs(x_nhwc, labels):
    return _tensor(x_nhwc, "float32"), _tensor(labels, "int32")


def _sync(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


def bench_step(model, path: str, mode: str, x, y, loss_fn, gpu: bool):
    """path eager: infer is infer() (a forward under torch.no_grad); train loss_and_gradients (autograd)."""
    if mode == "infer":
        fn = infer(model)
        return lambda: (fn(x), _sync(gpu))

    def train():
        loss_and_gradients(model, loss_fn, x, y)
        _sync(gpu)
    return train


def bench_matmul(n: int, gpu: bool):
    device = "cuda" if gpu else "cpu"
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    c = torch.empty(n, n, device=device)
    return lambda: (torch.mm(a, b, out=c), _sync(gpu))


def gpu_memory_mb() -> float:
    return torch.cuda.memory_allocated() / 2**20


def reset_gpu_peak() -> None:
    torch.cuda.reset_peak_memory_stats()


def gpu_peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20
