"""How far torch, Keras and Flax drift apart over N steps of the paper's training recipe.

From the same canonical weights, each framework runs train_step (its own PaperSGD) on the same batches;
after chosen steps the weights and velocities are exported in canonical form and compared per tensor,
max|a - b| / max|b|. Dropout is off (the frameworks' RNGs differ). The lr is divided by 10 after
--drop-after steps, as the paper's schedule does, through each framework's set_lr.

What to expect: ~1e-6 while every max pool and ReLU routes its gradient the same way. When two values
in a pool window lie within float32 rounding of each other (or a pre-activation within rounding of 0),
one framework can send the gradient to the other element; the layers below then differ by 1e-3..1e-1
from that step on (a different but equally valid trajectory), while the loss stays equal to ~1e-5.
Checked against a float64 gradient at the first such step: caffe (step 3) Flax and Keras were the ones
off, caffenet (4) and single-column (5) torch was, each at a pool2 window whose top two values were
within 1e-7 of the layer's max; Keras and Flax (both NHWC) tend to round alike and flip together.

    python benchmarks/train_drift.py                        # every variant at its smallest size, 20 steps
    python benchmarks/train_drift.py --variants caffe --size 227 --per-tensor
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alexnet_parity.common import VARIANTS, get_spec, init_weights, nchw_to_nhwc, smallest_input_size  # noqa: E402

PAIRS = (("torch", "keras"), ("torch", "flax"), ("keras", "flax"))


def no_dropout(spec):
    return spec.replace_layers("dropout", rate=0.0)


def frameworks():
    """name -> (impl package, its train module, NCHW -> native input)."""
    import alexnet_parity.jax_impl.train
    import alexnet_parity.tf_impl.train
    import alexnet_parity.torch_impl.train
    from alexnet_parity import jax_impl, tf_impl, torch_impl
    return {"torch": (torch_impl, torch_impl.train, lambda x: x),
            "keras": (tf_impl, tf_impl.train, nchw_to_nhwc),
            "flax": (jax_impl, jax_impl.train, nchw_to_nhwc)}


def batches(spec, steps, batch, seed):
    """Noise at the scale of the variant's preprocessed pixels (a natural image's pixel std is about a
    quarter of its range: ~64 for Caffe's mean-subtracted [0, 255], ~1.1 for torchvision's normalised)."""
    rng = np.random.default_rng(seed)
    scale = 0.25 * spec.preprocessing.pixel_range / float(np.mean(spec.preprocessing.std))
    return [((rng.standard_normal((batch, *spec.input_shape)) * scale).astype(np.float32),
             rng.integers(0, spec.num_classes, batch)) for _ in range(steps)]


def rel(a, b) -> float:
    return float(np.abs(np.subtract(a, b, dtype=np.float32)).max() / max(float(np.abs(b).max()), 1e-30))


def run(spec, weights, data, lr, drop_after, report_at, fws):
    """Per framework: {step: dict(loss, weights, velocity)} at the report steps."""
    results = {}
    for name, (impl, train, native) in fws.items():
        model = impl.build_model(spec, weights)
        opt = train.make_optimizer(model, lr=lr)
        results[name] = {}
        for step, (x, y) in enumerate(data, 1):
            if step == drop_after + 1:
                train.set_lr(opt, train.get_lr(opt) / 10)
            loss = train.train_step(model, opt, native(x), y)
            if step in report_at:
                results[name][step] = dict(loss=loss, weights=impl.export_weights(model),
                                           velocity=train.optimizer_state(opt))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--size", type=int, help="input size (default: each variant's smallest)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--drop-after", type=int, default=10, help="lr / 10 after this many steps (0: never)")
    parser.add_argument("--report", type=int, nargs="+", default=[1, 5, 10, 20], help="steps to compare after")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-tensor", action="store_true", help="print every tensor's drift, not just the worst")
    args = parser.parse_args(argv)

    fws = frameworks()
    report_at = sorted(s for s in set(args.report) if 1 <= s <= args.steps)
    drop_after = args.drop_after or args.steps + 1
    print(f"train drift: {args.steps} steps, batch {args.batch}, lr {args.lr:g}"
          + (f" (/10 after step {args.drop_after})" if args.drop_after else "")
          + f", the variant's own init (seed {args.seed}), dropout off; drift = max over tensors of "
          "max|a-b|/max|b| (tensor)")
    head = f"{'variant':<22}{'step':>5}  {'loss torch/keras/flax':<26}"
    for part in ("w", "v"):
        head += "".join(f"{part + ' ' + a[0] + '-' + b[0]:>10}" for a, b in PAIRS)
    print(head + "  worst velocity tensor")
    for variant in args.variants:
        spec = no_dropout(get_spec(variant, input_size=args.size or smallest_input_size(variant),
                                   num_classes=args.classes))
        weights = init_weights(spec, seed=args.seed)
        data = batches(spec, args.steps, args.batch, args.seed + 1)
        results = run(spec, weights, data, args.lr, drop_after, report_at, fws)
        label = f"{variant}@{spec.input_size}"
        for step in report_at:
            at = {name: results[name][step] for name in fws}
            losses = "/".join(f"{at[n]['loss']:.5f}" for n in fws)
            drift = {}
            for part in ("weights", "velocity"):
                for a, b in PAIRS:
                    per = {k: rel(at[a][part][k], at[b][part][k]) for k in at[b][part]}
                    drift[part, a, b] = per
            cells = "".join(f"{max(drift['weights', a, b].values()):>10.1e}" for a, b in PAIRS)
            cells += "".join(f"{max(drift['velocity', a, b].values()):>10.1e}" for a, b in PAIRS)
            worst_v = max(((t, a, b) for a, b in PAIRS for t in drift["velocity", a, b]),
                          key=lambda k: drift["velocity", k[1], k[2]][k[0]])
            print(f"{label:<22}{step:>5}  {losses:<26}{cells}  {worst_v[0]} ({worst_v[1]}-{worst_v[2]})")
            if args.per_tensor:
                for tensor in at["torch"]["weights"]:
                    row = "".join(f"{drift['weights', a, b][tensor]:>10.1e}" for a, b in PAIRS)
                    row += "".join(f"{drift['velocity', a, b][tensor]:>10.1e}" for a, b in PAIRS)
                    print(f"{'':<22}{'':>5}  {tensor:<26}{row}")


if __name__ == "__main__":
    main()
