"""The same short training run in torch, Keras and Flax: one variant, one seed, the same initial weights and
the same batches (training.loop), on synthetic data that needs no download. Shows that the loss falls in
each, overlays the three per-step loss curves, and prints each framework's training images/s.

    python benchmarks/train_synthetic.py                       # 1.5-3 minutes on 2 CPU cores
    python benchmarks/train_synthetic.py --frameworks torch,flax --epochs 2 --images 160

Each framework runs in a fresh interpreter, so no other framework's thread pool competes with it. The
curves differ only by each framework's dropout masks (its own RNG) and float rounding. images/s counts
a whole epoch (batch preparation included, the same numpy code for all three); the first epoch also pays
for compilation (XLA for Flax, tf.function for Keras), so the steady rate is taken from the later epochs.
Writes benchmarks/train_synthetic.png and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FRAMEWORKS = ("torch", "keras", "flax")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated (default: all three)")
    p.add_argument("--variant", default="slim-v2", help="default slim-v2: Glorot-initialised, it learns a small "
                   "set within a few dozen steps (the paper's N(0, 0.01) with biases 1 needs far longer)")
    p.add_argument("--input-size", type=int, default=67, help="default 67, slim-v2's smallest")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--images", type=int, default=480, help="synthetic images, a fifth held out (default 480)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.002, help="default 0.002: at 0.005 and above the loss, once "
                   "near 0, spikes to ~50 in every framework before it recovers (momentum 0.9, no warm-up)")
    p.add_argument("--patience", type=int, default=2, help="lr / 10 after this many epochs without a lower "
                   "validation error (default 2: a 96-image validation set is noisy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", default=os.path.join(ROOT, "benchmarks", "train_synthetic.png"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one framework, write JSON to --result
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args) -> None:
    """One framework's run: per-step losses and the per-epoch history, as JSON."""
    from alexnet_parity.training import Synthetic, val_split
    from alexnet_parity.training.loop import RunConfig, train

    train_set, val_set = val_split(Synthetic(num_classes=args.classes, count=args.images, seed=0), 0.2)
    config = RunConfig(framework=args.child, variant=args.variant, input_size=args.input_size,
                       num_classes=args.classes, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                       data=f"synthetic:{args.images}", val_fraction=0.2, patience=args.patience)
    losses = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        history = train(config, train_set, val_set, out, on_step=lambda epoch, step, loss: losses.append(loss))
    with open(args.result, "w") as f:
        json.dump({"framework": args.child, "losses": losses, "history": history,
                   "wall_s": time.perf_counter() - start}, f)


def plot(results: list[dict], args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for i, r in enumerate(results):
        losses = np.asarray(r["losses"])
        (line,) = ax_loss.plot(np.arange(1, len(losses) + 1), losses, alpha=0.35, linewidth=1)
        k = min(8, len(losses))  # a running mean shows the trend through the batch-to-batch noise
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax_loss.plot(np.arange(k, len(losses) + 1), smooth, color=line.get_color(), linewidth=2,
                     label=f"{r['framework']} (mean of {k})")
        epochs = [h["epoch"] for h in r["history"]]
        ax_acc.plot(epochs, [h["val_top1"] for h in r["history"]], "o-", color=line.get_color(), label=r["framework"],
                    markersize=10 - 3 * i, linewidth=3 - i)  # shrinking, so that coinciding points stay visible
    steps_per_epoch = len(results[0]["losses"]) // max(len(results[0]["history"]), 1)
    for e in range(1, args.epochs):
        ax_loss.axvline(e * steps_per_epoch + 0.5, color="grey", linestyle=":", linewidth=1)
    ax_loss.axhline(np.log(args.classes), color="black", linestyle="--", linewidth=1,
                    label=f"chance: ln {args.classes}")
    ax_loss.set(xlabel="step (dotted: epoch boundaries)", ylabel="training loss (cross-entropy)",
                title="per-step training loss")
    ax_acc.axhline(1 / args.classes, color="black", linestyle="--", linewidth=1, label="chance")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1", ylim=(0, 1.02), xticks=list(range(1, args.epochs + 1)),
               title="validation top-1")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{args.variant} at {args.input_size}px, {args.classes} synthetic classes, {args.images} images, "
                 f"batch {args.batch}, lr {args.lr:g}, seed {args.seed}: same initial weights and batches")
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    from alexnet_parity.training.frameworks import available

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for fw in args.frameworks.split(","):
            if not available(fw):
                print(f"{fw}: not installed, skipped", file=sys.stderr)
                continue
            result = os.path.join(tmp, f"{fw}.json")
            settings = {"--variant": args.variant, "--input-size": args.input_size, "--classes": args.classes,
                        "--images": args.images, "--epochs": args.epochs, "--batch": args.batch, "--lr": args.lr,
                        "--patience": args.patience, "--seed": args.seed}
            cmd = [sys.executable, os.path.abspath(__file__), "--child", fw, "--result", result,
                   *[str(a) for item in settings.items() for a in item]]
            print(f"[{fw}] training ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
                return proc.returncode
            with open(result) as f:
                results.append(json.load(f))
    if not results:
        return 1
    print(f"{args.variant} at {args.input_size}px, {args.classes} classes, {args.images} synthetic images "
          f"({int(args.images * 0.8)} train), batch {args.batch}, {args.epochs} epochs, lr {args.lr:g}, "
          f"seed {args.seed}")
    head = f"{'framework':<9} {'loss ep1':>9} {'loss ep' + str(args.epochs):>9} {'val top-1':>10} " \
           f"{'img/s ep1':>10} {'img/s later':>12} {'wall s':>7}"
    print(head)
    print("-" * len(head))
    for r in results:
        h = r["history"]
        later = [row["img_per_s"] for row in h[1:]] or [h[0]["img_per_s"]]
        print(f"{r['framework']:<9} {h[0]['train_loss']:>9.4f} {h[-1]['train_loss']:>9.4f} {h[-1]['val_top1']:>10.3f} "
              f"{h[0]['img_per_s']:>10.1f} {sum(later) / len(later):>12.1f} {r['wall_s']:>7.1f}")
    plot(results, args)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
