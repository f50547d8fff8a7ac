"""The kernels a Keras backend keeps (tf_impl/backends/*.py) against the portable code they replace, on whole
models in `alexnet bench`'s step (the backend's bench_step, its first bench path, batch 32): issue 14 keeps a
backend-specific kernel only where a paired bench shows it at least 10% faster for that backend.

    KERAS_BACKEND=tensorflow python benchmarks/keras_kernels.py [VARIANT ...] [--mode infer|train] [--repeats N]
    KERAS_BACKEND=jax python benchmarks/keras_kernels.py ...

Builds of each variant (default caffe and paper, the ones with LRN and grouped convolutions), each traced with
the backend's functions swapped in: `kept` (the backend's kernels: on TensorFlow the XLA-compiled LRN and TF's
grouped Conv2D, on JAX the grouped convolution split by group); `portable LRN` (layers.lrn called as it is);
`portable grouped conv` (keras.layers.Conv2D(groups=2) as Keras runs it), each only where the backend has its own.
They are timed alternately in one process, so a neighbour's load slows all alike; the figure is the median over
rounds of (portable step / kept step): 1.10 or more keeps the kernel. Each build is checked against `kept`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from alexnet_parity.common import get_spec  # noqa: E402
from alexnet_parity.parity_tests.core import parity_weights  # noqa: E402

KEEP = 1.10  # the bar
PATHS = {"tensorflow": "graph", "jax": "jit", "torch": "eager"}  # each backend's first path in tf_impl.engine
SWAPS = {"portable LRN": ("lrn", lambda portable, x, *a: portable(x, *a)),
         "portable grouped conv": ("grouped_conv", None)}
OWN = {"tensorflow": ("lrn", "grouped_conv"), "jax": ("grouped_conv",), "torch": ()}  # the kernels each one keeps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="*", default=["caffe", "paper"])
    p.add_argument("--mode", choices=("infer", "train"), default="infer")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)

    import keras

    from alexnet_parity import tf_impl
    from alexnet_parity.tf_impl import backends
    from alexnet_parity.tf_impl.train import loss_fn
    backend, name = backends.current(), keras.backend.backend()
    path = PATHS[name]
    builds = {"kept": {}, **{b: {k: v} for b, (k, v) in SWAPS.items() if k in OWN[name]}}
    if len(builds) == 1:
        raise SystemExit(f"Keras's {name} backend keeps no kernel of its own: nothing to compare")
    versions = ", ".join(f"{k} {v}" for k, v in backend.bench_setup(False, None)["versions"].items())
    print(f"{versions}, keras {keras.__version__}; {args.mode}, batch {args.batch}, {path} path, "
          f"median of {args.repeats} alternating rounds after {args.warmup} warm-up; load average "
          f"{os.getloadavg()[0]:.2f}")
    for variant in args.variants:
        spec = get_spec(variant)
        weights = parity_weights(spec)
        rng = np.random.default_rng(0)
        x_np = rng.standard_normal((args.batch, *spec.input_shape), dtype=np.float32).transpose(0, 2, 3, 1).copy()
        x, y = backend.bench_inputs(x_np, rng.integers(0, spec.num_classes, args.batch))
        steps, outputs = {}, {}
        for name, swap in builds.items():
            saved = {k: getattr(backend, k) for k in swap}
            for k, v in swap.items():
                setattr(backend, k, v)
            try:  # both the step's trace and the check's call run with the swapped functions
                model = tf_impl.build_model(spec, weights)
                steps[name] = backend.bench_step(model, path, args.mode, x, y, loss_fn, gpu=False)
                for _ in range(1 + args.warmup):
                    steps[name]()
                outputs[name] = np.asarray(model(x[:4], training=False))
            finally:
                for k, v in saved.items():
                    setattr(backend, k, v)
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
        kept = times["kept"]
        print(f"\n{variant} (input {spec.input_size})")
        print(f"  {'build':<22} {'img/s':>7} {'portable/kept':>14} {'max|diff|':>10}  "
              f"kernel earns its place (>= {KEEP})")
        for name, ts in times.items():
            rate = args.batch / statistics.median(ts)
            diff = float(np.abs(outputs[name] - outputs["kept"]).max())
            if name == "kept":
                print(f"  {name:<22} {rate:7.1f} {'':>14} {'':>10}")
                continue
            ratio = statistics.median(a / b for a, b in zip(ts, kept))
            print(f"  {name:<22} {rate:7.1f} {ratio:14.3f} {diff:10.1e}  {'yes' if ratio >= KEEP else 'NO'}")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
