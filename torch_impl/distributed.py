"""Data-parallel training of the paper's optimizer on PyTorch's own engine: DistributedDataParallel over a
process group (gloo on CPUs, NCCL on GPUs), one process per device, started by torchrun.

    torchrun --nproc-per-node 2 -m alexnet_parity.torch_impl.distributed --variant caffe --steps 10 --batch-size 64

Every process holds the same model and takes its contiguous rows of each global batch; during backward DDP
averages the gradients over the processes. The gradient of each process's mean loss, averaged over equal
shards, is the gradient of the global batch's mean loss, so a step is the one-device step on the global batch
(up to float32 summation order). Several hosts: the same command with --nnodes and a rendezvous endpoint
(docs/distributed.md).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexnet_parity.common import Spec
from alexnet_parity.common.optim import PaperSGD as PaperSGDConfig

from .model import build_model, export_weights
from .train import make_optimizer, optimizer_state, train_step


def setup(backend: str | None = None) -> tuple[int, int]:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the
    environment), once per process: NCCL when CUDA is there, else gloo. Returns (rank, world_size)."""
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_device())
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return dist.get_rank(), dist.get_world_size()


def local_device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def shard(batch, rank: int, world: int):
    """Rows [rank * b, (rank + 1) * b) of a global batch of world * b rows: this process's part."""
    n = len(batch)
    if n % world:
        raise ValueError(f"a global batch of {n} does not split evenly over {world} processes")
    b = n // world
    return batch[rank * b:(rank + 1) * b]


def wrap(model: nn.Module) -> DistributedDataParallel:
    """The model under DDP, on the device its parameters are on (broadcasts rank 0's weights to all)."""
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def train(spec: Spec, weights: dict | None, batches: Iterable, *, lr: float | None = None,
          cfg: PaperSGDConfig = PaperSGDConfig(), seed: int = 0,
          on_step: Callable[[int, float], None] | None = None, return_velocity: bool = False):
    """One step of the paper's SGD per global batch (x NCHW, labels) of `batches`, data-parallel over the
    process group (joined here if need be); every process passes the same global batches and trains on its
    shard. weights=None draws the variant's init with `seed` (DDP broadcasts rank 0's anyway). Dropout
    draws from torch's RNG seeded with seed + rank. on_step(step, the global batch's mean loss) is called
    where given. Returns the canonical weights, the same on every process, and with return_velocity=True
    also the optimizer's velocities (the last update; what resuming needs)."""
    rank, world = setup()
    device = local_device()
    net = build_model(spec, weights, seed=seed).to(device)
    ddp = wrap(net)
    optimizer = make_optimizer(net, lr, cfg)
    torch.manual_seed(seed + rank)
    ddp.train()
    for step, (x, y) in enumerate(batches, 1):
        x = torch.as_tensor(shard(x, rank, world), dtype=torch.float32, device=device)
        y = torch.as_tensor(np.asarray(shard(y, rank, world)), dtype=torch.long, device=device)
        loss = torch.tensor(train_step(ddp, optimizer, x, y))  # DDP averages the gradients in backward
        dist.all_reduce(loss)  # on every process, whoever logs (a collective all must join); gloo has no AVG
        if on_step is not None:
            on_step(step, float(loss) / world)
    net.eval()
    weights = export_weights(net)
    return (weights, optimizer_state(optimizer)) if return_velocity else weights


def main(argv=None) -> None:
    """A data-parallel run on synthetic images (training.Synthetic through the paper's augmentation): checks
    a cluster's setup end to end and prints the global loss per step on rank 0."""
    from alexnet_parity.training.smoke import save_weights, smoke_data, smoke_parser, step_logger
    parser = smoke_parser("torchrun ... -m alexnet_parity.torch_impl.distributed", main.__doc__, split_over="processes",
                          chief="rank 0")
    args = parser.parse_args(argv)

    rank, world = setup()
    spec, data = smoke_data(args)
    if rank == 0:
        print(f"{spec.describe()}: {world} processes x {args.batch_size // world} images", flush=True)
    weights = train(spec, None, data, lr=args.lr, seed=args.seed, on_step=step_logger(rank == 0))
    save_weights(args, spec, weights, rank == 0)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
