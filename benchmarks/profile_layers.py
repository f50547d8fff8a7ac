"""Where a forward pass spends its time: each layer of one variant alone, in each framework's fast path, with
the GFLOP/s of every conv and dense layer, so the gap to the matmul roof has names.

    python benchmarks/profile_layers.py [VARIANT] [--frameworks torch,keras,flax] [--batch 32] [--repeats 10]

Each framework runs in its own process. Layer times are medians of --repeats calls on that layer's real input;
their sum is printed beside the whole forward's median, which it should roughly match.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from alexnet_parity.common import Conv, Dense, Dropout, get_spec
from alexnet_parity.parity_tests.core import parity_weights


def timed(fn, x, repeats):
    fn(x)
    fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def torch_layers(spec, weights, x, repeats):
    import torch

    from alexnet_parity import torch_impl
    model = torch_impl.build_model(spec, weights).eval()
    x = torch.from_numpy(x)
    out = []
    with torch.inference_mode():
        acts = torch_impl.activations(model, x)
        prev = x
        for name, module in model.named_children():
            out.append((name, timed(module, prev.clone() if getattr(module, "inplace", False) else prev, repeats)))
            prev = acts[name]
        total = timed(model, x, repeats)
    return out, total


def keras_layers(spec, weights, x, repeats):
    import tensorflow as tf

    from alexnet_parity import tf_impl
    model = tf_impl.build_model(spec, weights)
    x = tf.constant(x.transpose(0, 2, 3, 1))
    out, prev = [], x
    for layer in model.layers[1:]:  # after the InputLayer; pads are separate layers, named <layer>_pad
        f = tf.function(lambda a, layer=layer: layer(a, training=False))
        out.append((layer.name, timed(f, prev, repeats)))
        prev = f(prev)
    whole = tf.function(lambda a: model(a, training=False))
    return out, timed(whole, x, repeats)


def flax_layers(spec, weights, x, repeats):
    import jax
    from flax import nnx

    from alexnet_parity import jax_impl
    from alexnet_parity.common import LRN, AdaptiveAvgPool, Flatten, MaxPool, ReLU
    from alexnet_parity.jax_impl.layers import adaptive_avg_pool, lrn, max_pool
    model = jax_impl.build_model(spec, weights)
    x = jax.numpy.asarray(x.transpose(0, 2, 3, 1))
    acts = jax_impl.activations(model, x)

    def one(layer):
        if isinstance(layer, (Conv, Dense)):
            graphdef, state = nnx.split(getattr(model, layer.name))
            f = jax.jit(lambda s, a: nnx.merge(graphdef, s)(a))
            return lambda a: f(state, a)
        fn = {ReLU: jax.nn.relu, LRN: lambda a: lrn(a, layer), MaxPool: lambda a: max_pool(a, layer),
              AdaptiveAvgPool: lambda a: adaptive_avg_pool(a, layer), Dropout: lambda a: a,
              Flatten: lambda a: a.reshape(a.shape[0], -1)}[type(layer)]
        return jax.jit(fn)

    out, prev = [], x
    for layer in spec.layers:
        f = one(layer)
        out.append((layer.name, timed(lambda a: f(a).block_until_ready(), prev, repeats)))
        prev = acts[layer.name]
    whole = jax_impl.jit_forward(model)
    return out, timed(lambda a: whole(a).block_until_ready(), x, repeats)


LAYERS = {"torch": torch_layers, "keras": keras_layers, "flax": flax_layers}


def run_one(framework, variant, batch, repeats):
    spec = get_spec(variant)
    x = np.random.default_rng(0).standard_normal((batch, *spec.input_shape), dtype=np.float32)
    layers, total = LAYERS[framework](spec, parity_weights(spec), x, repeats)
    print(json.dumps({"framework": framework, "layers": layers, "total": total}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", nargs="?", default="paper")
    p.add_argument("--frameworks", default="torch,keras,flax")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--one", help=argparse.SUPPRESS)  # the per-framework child
    args = p.parse_args()
    if args.one:
        return run_one(args.one, args.variant, args.batch, args.repeats)
    spec = get_spec(args.variant)
    macs = {layer.name: spec.layer_macs(layer) for layer in spec.layers}
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    for fw in args.frameworks.split(","):
        proc = subprocess.run([sys.executable, __file__, args.variant, "--one", fw, "--batch", str(args.batch),
                               "--repeats", str(args.repeats)], env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"{fw}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        layer_sum = sum(t for _, t in r["layers"])
        print(f"\n{fw}: {args.variant}, batch {args.batch}; whole forward {1e3 * r['total']:.1f} ms, "
              f"sum of layers {1e3 * layer_sum:.1f} ms")
        print(f"  {'layer':<12}{'ms':>8}{'share':>8}{'GFLOP/s':>9}")
        for name, t in r["layers"]:
            gf = 2 * macs.get(name, 0) * args.batch / t / 1e9 if macs.get(name) else None
            print(f"  {name:<12}{1e3 * t:8.2f}{100 * t / layer_sum:7.1f}%" + (f"{gf:9.0f}" if gf else ""))


if __name__ == "__main__":
    main()
