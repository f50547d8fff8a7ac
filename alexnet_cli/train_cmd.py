"""`alexnet train`: the paper's recipe in torch, Keras or Flax, through the one loop in training.loop.

Writes into --out after every epoch (and where --max-steps stops): checkpoint.safetensors (weights, velocity,
lr schedule, position; --resume continues from it exactly), model.safetensors (the checkpoint's weights,
canonical, for eval, predict, convert), metrics.csv, metrics.json and metrics.png; the checkpoint is the
commit point (training/loop.py). Imports only the chosen framework.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from . import _data

DEFAULTS = {"variant": "paper", "input_size": None, "num_classes": None, "batch": 128, "seed": 0,
            "data": None, "val_fraction": 0.1}


def add_arguments(p):
    from alexnet_parity.training.frameworks import framework_help
    from alexnet_parity.common import VARIANTS

    p.add_argument("--framework", metavar="F", help=framework_help())
    p.add_argument("--variant", metavar="V", help=f"default paper; one of: {', '.join(VARIANTS)}")
    p.add_argument("--data", metavar="PATH", help=_data.HELP)
    p.add_argument("--input-size", type=int, metavar="N", help="square input size (default: the variant's own)")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="outputs of fc8 (default: the data's classes; synthetic: 10)")
    p.add_argument("--epochs", type=int, default=90, metavar="N", help="epochs in all, counting resumed ones "
                   "(default 90, the paper's)")
    p.add_argument("--batch", type=int, metavar="N", help="images per step (default 128, the paper's)")
    p.add_argument("--lr", type=float, metavar="LR", help="initial learning rate (default 0.01); with --resume, "
                   "the rate to continue at")
    p.add_argument("--seed", type=int, metavar="N", help="seeds the initial weights, image order, augmentation "
                   "and dropout (default 0)")
    p.add_argument("--out", metavar="DIR", help="where checkpoints and metrics go (default runs/VARIANT-FRAMEWORK)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.safetensors; the "
                   "result equals an uninterrupted run")
    p.add_argument("--val-fraction", type=float, metavar="F", help="share of each class held out for "
                   "validation when the data has no val/ (default 0.1)")
    p.add_argument("--patience", type=int, metavar="N", help="epochs without a lower validation error before "
                   "the lr is divided by 10 (default 1: the paper's 'when it stopped improving')")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps in all (checkpointed: "
                   "--resume continues)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="threads decoding images (default 2)")


def _positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")


def run(args) -> int:
    from alexnet_parity.common import VARIANTS
    from alexnet_parity.training import frameworks
    from alexnet_parity.training.loop import CHECKPOINT, MODEL, RunConfig, checkpoint_state, train

    _positive(args, "epochs", "batch", "lr", "max_steps", "num_classes", "input_size", "workers", "patience")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must lie strictly between 0 and 1, got {args.val_fraction}")
    if args.variant is not None and args.variant not in VARIANTS:
        raise ValueError(f"unknown --variant {args.variant!r}; choose one of: {', '.join(VARIANTS)}")
    if args.framework:
        frameworks.check_framework(args.framework)

    # settings: given > recorded in the checkpoint (on --resume) > defaults
    given = {"variant": args.variant, "input_size": args.input_size, "num_classes": args.num_classes,
             "batch": args.batch, "seed": args.seed, "val_fraction": args.val_fraction,
             "data": _data.normalized(args.data) if args.data else None}
    out = Path(args.out or f"runs/{given['variant'] or 'paper'}-{args.framework or frameworks.default_framework()}")
    recorded = {}
    if args.resume:
        if not os.path.lexists(out / CHECKPOINT):
            raise FileNotFoundError(f"--resume: no checkpoint {out / CHECKPOINT}")
        recorded = checkpoint_state(out / CHECKPOINT)["config"]
    settings = {k: given[k] if given[k] is not None else recorded.get(k, DEFAULTS[k]) for k in DEFAULTS}
    if settings["data"] is None:
        raise ValueError("--data is required: " + _data.HELP)
    framework = frameworks.check_framework(args.framework or recorded.get("framework")
                                           or frameworks.default_framework())

    train_source, val_source = _data.training_sources(settings["data"], settings["num_classes"],
                                                      settings["val_fraction"])
    config = RunConfig(framework=framework, variant=settings["variant"], input_size=settings["input_size"],
                       num_classes=settings["num_classes"] or train_source.num_classes, epochs=args.epochs,
                       batch=settings["batch"], lr=recorded.get("lr", 0.01) if args.resume else args.lr or 0.01,
                       seed=settings["seed"], data=settings["data"], val_fraction=settings["val_fraction"],
                       patience=args.patience or recorded.get("patience", 1))
    if config.input_size is None:  # record the resolved size, so a resume compares like with like
        config = dataclasses.replace(config, input_size=config.spec().input_size)
    if recorded and recorded.get("framework") != framework:
        print(f"resuming a {recorded.get('framework')} run in {framework}: same weights and state, but "
              f"not bit-identical to continuing in {recorded.get('framework')}", file=sys.stderr)
    history = train(config, train_source, val_source, out, resume=args.resume, max_steps=args.max_steps,
                    lr=args.lr if args.resume else None, threads=args.workers)
    if history:
        last = history[-1]
        print(f"epoch {last['epoch']}: val top-1 {last['val_top1']:.4f}  top-5 {last['val_top5']:.4f}  "
              f"loss {last['val_loss']:.4f}")
    print(f"weights: {out / MODEL}   resume: {out / CHECKPOINT}   metrics: {out / 'metrics.csv'}")
    return 0
