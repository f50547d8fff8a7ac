"""Inference img/s of ONNX Runtime (the spec's own ONNX export, CPUExecutionProvider) beside torch_impl
(eager, inference_mode) on the same spec, weights and batch, in one process, the two interleaved round by
round so that a busy machine slows both alike. Prints the median of each and their ratio.

    python benchmarks/onnx_bench.py                         # torchvision and paper, batch 32, 10 rounds
    python benchmarks/onnx_bench.py --variants caffe --batch 16 --rounds 5 --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="torchvision,paper")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="both engines' intra-op threads (default: theirs)")
    args = p.parse_args()

    import numpy as np
    import torch

    from alexnet_parity import onnx_impl, torch_impl
    from alexnet_parity.common import get_spec
    from alexnet_parity.parity_tests.core import parity_input, parity_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.rounds} rounds, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {onnx_impl.run.ort.__version__}")
    for variant in args.variants.split(","):
        spec = get_spec(variant)
        weights = parity_weights(spec)
        x = parity_input(spec, batch=args.batch)
        model = torch_impl.build_model(spec, weights).eval()
        sess = onnx_impl.session(onnx_impl.build_model(spec, weights), threads=args.threads)
        xt = torch.from_numpy(x)
        feed = {sess.get_inputs()[0].name: x}

        def run_torch():
            with torch.inference_mode():
                return model(xt).numpy()

        def run_ort():
            return sess.run(None, feed)[0]

        a, b = run_torch(), run_ort()  # warm-up, and the two must agree
        agree = float(np.abs(a - b).max() / np.abs(a).max())
        times = {"torch": [], "onnxruntime": []}
        for _ in range(args.rounds):
            for name, fn in (("torch", run_torch), ("onnxruntime", run_ort)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
        print(f"{spec.describe():<28} torch {rate['torch']:7.1f} img/s   onnxruntime {rate['onnxruntime']:7.1f} img/s"
              f"   ort/torch {rate['onnxruntime'] / rate['torch']:.2f}   (outputs agree to {agree:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
