"""LRN, the one layer no framework ships as the spec wants it: each impl's choice against the alternatives,
on the paper's two LRN inputs at batch 32 (norm1: 96x55x55, norm2: 256x27x27), in each framework's fast path.

    python benchmarks/profile_lrn.py [torch|keras|flax ...]   # default: all three, each in its own process

Every option is checked against the impl's own layer (max|a-b| / max|b|), so a faster one is also a correct one.
Prints one table per framework; milliseconds are the median of --repeats calls of norm1 + norm2.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from alexnet_parity.alexnet_cli._malloc import keep_large_buffers
from alexnet_parity.common import LRN, get_spec

BATCH = 32


def paper_lrn_inputs(nhwc: bool):
    """Post-ReLU activations shaped like the paper's norm1 and norm2 inputs (non-negative, spread like real ones)."""
    spec = get_spec("paper")
    rng = np.random.default_rng(0)
    out = []
    for layer in (layer for layer in spec.layers if isinstance(layer, LRN)):
        a = np.maximum(rng.normal(0, 30, (BATCH, *layer.in_shape)), 0).astype(np.float32)
        out.append((layer, a.transpose(0, 2, 3, 1).copy() if nhwc else a))
    return out


def timed(fn, args, repeats):
    fn(*args)
    fn(*args)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(framework, rows, reference_name):
    print(f"\n{framework}: LRN of the paper's norm1 + norm2, batch {BATCH} (median ms; error vs {reference_name})")
    width = max(len(r[0]) for r in rows)
    for name, ms, err in rows:
        print(f"  {name.ljust(width)}  {ms:8.1f} ms   {err:.1e}")


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---------------------------------------------------------------------------------------------- torch
def torch_options(repeats):
    import torch
    import torch.nn.functional as F

    from alexnet_parity import torch_impl
    from alexnet_parity.torch_impl.layers import _local_response_norm_formula  # what torch_impl hands torch.compile

    def formula_with_pow(x, size, scale, beta, k):  # the same, with a general pow for d ** -beta
        squares = F.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        return x * (k + scale * sum(squares[:, i:i + x.shape[1]] for i in range(size))) ** -beta

    def with_chunk(elements):  # torch_impl's eager kernel with another chunk size
        def lrn(*args):
            kept, torch_impl.layers.CHUNK_ELEMENTS = torch_impl.layers.CHUNK_ELEMENTS, elements
            try:
                return torch_impl.local_response_norm(*args)
            finally:
                torch_impl.layers.CHUNK_ELEMENTS = kept
        return lrn

    def avg_pool_conv(x, size, scale, beta, k):  # the window sum as a 1-D conv over channels
        n, c, h, w = x.shape
        window = F.conv2d((x * x).view(n, 1, c, h * w), torch.ones(1, 1, size, 1), padding=(size // 2, 0))
        return x * (window.view(n, c, h, w) * scale + k).pow_(-beta)

    options = {
        "torch_impl.local_response_norm (eager, now)": torch_impl.local_response_norm,
        "the same with 4 MB chunks (until 2026-12)": with_chunk(1 << 20),
        "F.local_response_norm (alpha = scale*n)": lambda x, s, sc, b, k: F.local_response_norm(x, s, sc * s, b, k),
        "window sum as a 1-D conv": avg_pool_conv,
        "torch.compile: formula with rsqrt*sqrt(rsqrt) (now)": torch.compile(_local_response_norm_formula,
                                                                             dynamic=False),
        "torch.compile: formula with pow": torch.compile(formula_with_pow, dynamic=False),
    }
    inputs = [(layer, torch.from_numpy(a)) for layer, a in paper_lrn_inputs(nhwc=False)]
    with torch.inference_mode():
        ref = [torch_impl.local_response_norm(a, layer.size, layer.scale, layer.beta, layer.k) for layer, a in inputs]
        rows = []
        for name, fn in options.items():
            run = lambda: [fn(a, layer.size, layer.scale, layer.beta, layer.k) for layer, a in inputs]
            err = max(rel(o, r) for o, r in zip(run(), ref))
            rows.append((name, 1e3 * timed(run, (), repeats), err))
    report("torch (eager, inference_mode)", rows, "torch_impl's")


# ---------------------------------------------------------------------------------------------- keras
def keras_options(repeats):
    import tensorflow as tf

    from alexnet_parity.tf_impl.layers import LocalResponseNorm

    def band(layer, c):
        half = layer.size // 2
        off = np.arange(c)[None, :] - np.arange(c)[:, None]
        return tf.constant(((off >= -half) & (off <= layer.size - 1 - half)).astype(np.float32))

    def band_rsqrt(x, layer):
        d = layer.k + layer.scale * tf.tensordot(tf.square(x), band(layer, x.shape[-1]), axes=1)
        return x * tf.math.rsqrt(d * tf.sqrt(d))

    def shifted_rsqrt(x, layer):
        half, c = layer.size // 2, x.shape[-1]
        sq = tf.pad(tf.square(x), [[0, 0], [0, 0], [0, 0], [half, layer.size - 1 - half]])
        window = tf.add_n([sq[..., i:i + c] for i in range(layer.size)])
        d = layer.k + layer.scale * window
        return x * tf.math.rsqrt(d * tf.sqrt(d))

    def tf_nn(x, layer):  # tf.nn's alpha multiplies the plain sum, as the spec's scale does; odd sizes only
        return tf.nn.local_response_normalization(x, depth_radius=layer.size // 2, bias=layer.k, alpha=layer.scale,
                                                  beta=layer.beta)

    options = {
        "tf_impl LocalResponseNorm (now)": lambda x, layer: LocalResponseNorm(layer.size, layer.k, layer.beta,
                                                                             layer.scale)(x),
        "band matmul + rsqrt(d*sqrt(d))": band_rsqrt,
        "shifted slices + rsqrt(d*sqrt(d))": shifted_rsqrt,
        "tf.nn.local_response_normalization": tf_nn,
    }
    inputs = [(layer, tf.constant(a)) for layer, a in paper_lrn_inputs(nhwc=True)]
    ref = None
    rows = []
    for jit in (False, True):
        for name, fn in options.items():
            if jit and name.startswith("tf.nn"):
                continue  # XLA has no LRN kernel on CPU
            per_layer = [tf.function(lambda x, layer=layer, fn=fn: fn(x, layer), jit_compile=jit)
                         for layer, _ in inputs]
            run = lambda per_layer=per_layer: [g(a) for g, (_, a) in zip(per_layer, inputs)]
            outs = [o.numpy() for o in run()]
            ref = ref or outs
            err = max(rel(o, r) for o, r in zip(outs, ref))
            rows.append((("XLA: " if jit else "graph: ") + name, 1e3 * timed(run, (), repeats), err))
    report("keras / TensorFlow (tf.function)", rows, "tf_impl's in graph mode")


# ---------------------------------------------------------------------------------------------- flax
def flax_options(repeats):
    import jax
    import jax.numpy as jnp
    from jax import lax

    from alexnet_parity.jax_impl.layers import lrn

    def band_matmul(x, layer):
        half, c = layer.size // 2, x.shape[-1]
        off = np.arange(c)[None, :] - np.arange(c)[:, None]
        m = jnp.asarray(((off >= -half) & (off <= layer.size - 1 - half)).astype(np.float32))
        d = layer.k + layer.scale * jnp.tensordot(x * x, m, axes=1, precision="highest")
        return x * lax.rsqrt(d * jnp.sqrt(d))

    def reduce_window(x, layer):
        half = layer.size // 2
        window = lax.reduce_window(x * x, 0.0, lax.add, (1, 1, 1, layer.size), (1, 1, 1, 1),
                                   ((0, 0), (0, 0), (0, 0), (half, layer.size - 1 - half)))
        d = layer.k + layer.scale * window
        return x * lax.rsqrt(d * jnp.sqrt(d))

    def pow_version(x, layer):
        half, c = layer.size // 2, x.shape[-1]
        sq = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (half, layer.size - 1 - half)))
        window = sum(sq[..., i:i + c] for i in range(layer.size))
        return x * (layer.k + layer.scale * window) ** -layer.beta

    options = {"jax_impl.layers.lrn (now)": lrn, "band matmul": band_matmul, "lax.reduce_window": reduce_window,
               "shifted slices with pow": pow_version}
    inputs = [(layer, jnp.asarray(a)) for layer, a in paper_lrn_inputs(nhwc=True)]
    ref, rows = None, []
    for name, fn in options.items():
        per_layer = [jax.jit(lambda x, layer=layer, fn=fn: fn(x, layer)) for layer, _ in inputs]
        run = lambda per_layer=per_layer: [g(a).block_until_ready() for g, (_, a) in zip(per_layer, inputs)]
        outs = [np.asarray(o) for o in run()]
        ref = ref or outs
        rows.append((name, 1e3 * timed(run, (), repeats), max(rel(o, r) for o, r in zip(outs, ref))))
    report("flax / JAX (jax.jit)", rows, "jax_impl's")


OPTIONS = {"torch": torch_options, "keras": keras_options, "flax": flax_options}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("frameworks", nargs="*", help="torch, keras, flax (default all)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    for fw in args.frameworks:
        if fw not in OPTIONS:
            p.error(f"unknown framework {fw!r}; choose from {', '.join(OPTIONS)}")
    if len(args.frameworks) == 1:
        print(f"malloc: {keep_large_buffers()}")  # as in the alexnet command: a fresh output's pages cost no faults
        OPTIONS[args.frameworks[0]](args.repeats)
        return
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    for fw in args.frameworks or OPTIONS:  # one process each: no framework's threads idle beside another's
        subprocess.run([sys.executable, __file__, fw, "--repeats", str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
