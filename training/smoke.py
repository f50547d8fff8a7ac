"""The command line each impl's `distributed` module offers: a short data-parallel run of the paper's SGD on
synthetic images that checks a cluster's setup end to end. Here are the parts the three share: the common
arguments, the data, the per-step log and the saved weights."""
from __future__ import annotations

import argparse


def smoke_parser(prog: str, description: str, *, split_over: str, chief: str) -> argparse.ArgumentParser:
    """The shared arguments; each framework adds its own cluster options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--variant", default="caffe")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help=f"global batch, split over the {split_over}")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help=f"write the trained weights (canonical .safetensors) from {chief}")
    return parser


def smoke_data(args):
    """(spec, NCHW batches): `steps` global batches of synthetic images through the paper's augmentation."""
    from alexnet_parity.common import get_spec

    from .loader import Batches
    from .sources import Synthetic

    spec = get_spec(args.variant, input_size=args.input_size, num_classes=args.num_classes)
    data = Batches(Synthetic(args.num_classes, count=args.batch_size * args.steps, seed=args.seed), spec,
                   args.batch_size, train=True, seed=args.seed)
    return spec, data


def step_logger(chief: bool):
    """on_step for the training loop: the global loss per step, printed by the chief only."""
    return (lambda step, loss: print(f"step {step}: loss {loss:.4f}", flush=True)) if chief else None


def save_weights(args, spec, weights, chief: bool) -> None:
    if chief and args.out:
        from alexnet_parity.weights_convert import canonical
        canonical.save(args.out, spec, weights)
