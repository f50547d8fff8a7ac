"""Data-parallel training of the paper's optimizer on JAX's own engine: jax_impl.train's jitted step over a
Mesh whose "data" axis spans every device (every host's, after jax.distributed.initialize), with the global
batch sharded along it by NamedSharding and the model and optimizer state replicated. XLA's SPMD partitioner
turns the batch mean into per-device partial sums and an all-reduce; the step's code is the one-device step.

    python -m alexnet_parity.jax_impl.distributed --variant caffe --steps 10 --batch-size 64                 # this host's devices
    python -m alexnet_parity.jax_impl.distributed --coordinator h0:1234 --num-processes 2 --process-id 0 ...  # host 0 of 2
"""
from __future__ import annotations

from typing import Callable, Iterable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alexnet_parity.common import Spec, nchw_to_nhwc
from alexnet_parity.common.optim import PaperSGD as PaperSGDConfig

from . import train as single
from .model import build_model, export_weights


def initialize(**kwargs) -> None:
    """jax.distributed.initialize for several hosts, once per process, before anything touches a device:
    no arguments on SLURM, Open MPI and Cloud TPU (found from the environment), else coordinator_address=
    "host:port", num_processes=, process_id=."""
    jax.distributed.initialize(**kwargs)


def make_mesh(devices=None) -> Mesh:
    """One "data" axis over `devices`: by default every device of every process, jax.devices()."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def shard_batch(mesh: Mesh, batch: np.ndarray) -> jax.Array:
    """A global batch as one array split by rows along the mesh's "data" axis; each process, holding the
    same global batch, puts only its own devices' rows on them."""
    n, size = len(batch), mesh.shape["data"]
    if n % size:
        raise ValueError(f"a global batch of {n} does not split evenly over {size} devices")
    batch = np.asarray(batch)
    return jax.make_array_from_callback(batch.shape, NamedSharding(mesh, PartitionSpec("data")),
                                        lambda index: batch[index])


def replicate(mesh: Mesh, tree):
    """Every array of a pytree (a model's or optimizer's state) copied to every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # an RNG key: its raw data, re-wrapped
            return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        a = np.asarray(a)  # (jax.device_put cannot reach other processes' devices)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


def _local(a: jax.Array):
    """This process's copy of a replicated array (on several hosts no process can read the global one)."""
    return a.addressable_data(0)


def train(spec: Spec, weights: dict | None, batches: Iterable, *, lr: float | None = None,
          cfg: PaperSGDConfig = PaperSGDConfig(), mesh: Mesh | None = None, seed: int = 0,
          on_step: Callable[[int, float], None] | None = None, return_velocity: bool = False):
    """One step of the paper's SGD per global batch (x NHWC, labels) of `batches`, data-parallel over the
    mesh (make_mesh() by default); on several hosts every process passes the same global batches.
    weights=None draws the variant's init with `seed`; dropout draws from nnx.Rngs(dropout=seed), the same
    masks as one device with that seed. on_step(step, the global batch's mean loss) is called where given.
    Returns the canonical weights, and with return_velocity=True also the optimizer's velocities (the last
    update; what resuming needs)."""
    mesh = mesh or make_mesh()
    model = build_model(spec, weights, seed=seed)
    optimizer = single.make_optimizer(model, lr, cfg)
    nnx.update((model, optimizer), replicate(mesh, nnx.state((model, optimizer))))
    rngs = None
    if any(layer.kind == "dropout" and layer.rate > 0 for layer in spec.layers):
        rngs = nnx.Rngs(dropout=seed)
        nnx.update(rngs, replicate(mesh, nnx.state(rngs)))
    for step, (x, y) in enumerate(batches, 1):
        x, y = shard_batch(mesh, np.asarray(x, np.float32)), shard_batch(mesh, np.asarray(y, np.int32))
        loss = single._train_step(model, optimizer, x, y, rngs)  # the one-device step, partitioned by XLA
        if on_step is not None:
            on_step(step, float(_local(loss)))
    nnx.update((model, optimizer), jax.tree.map(_local, nnx.state((model, optimizer))))
    weights = export_weights(model)
    return (weights, single.optimizer_state(optimizer)) if return_velocity else weights


def main(argv=None) -> None:
    """A data-parallel run on synthetic images (training.Synthetic through the paper's augmentation): checks
    a cluster's setup end to end and prints the global loss per step on process 0."""
    from alexnet_parity.training.smoke import save_weights, smoke_data, smoke_parser, step_logger
    parser = smoke_parser("python -m alexnet_parity.jax_impl.distributed", main.__doc__, split_over="devices", chief="process 0")
    parser.add_argument("--coordinator", help="host:port of process 0, for several hosts")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--auto", action="store_true", help="several hosts, found from SLURM / Open MPI / TPU")
    args = parser.parse_args(argv)

    if args.coordinator or args.auto:
        initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                   process_id=args.process_id)
    chief = jax.process_index() == 0
    spec, data = smoke_data(args)
    mesh = make_mesh()
    if chief:
        print(f"{spec.describe()}: {jax.process_count()} processes, {mesh.size} devices x "
              f"{args.batch_size // mesh.size} images", flush=True)
    weights = train(spec, None, ((nchw_to_nhwc(x), y) for x, y in data), lr=args.lr, mesh=mesh, seed=args.seed,
                    on_step=step_logger(chief))
    save_weights(args, spec, weights, chief)


if __name__ == "__main__":
    main()
