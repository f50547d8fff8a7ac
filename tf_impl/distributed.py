"""Data-parallel training of the paper's optimizer on TensorFlow's own engine, tf.distribute:
MirroredStrategy over this machine's GPUs (or logical CPUs), MultiWorkerMirroredStrategy over several hosts
when TF_CONFIG describes the cluster.

    python -m alexnet_parity.tf_impl.distributed --variant caffe --steps 10 --batch-size 64                 # this machine's GPUs
    TF_CONFIG='{"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python -m alexnet_parity.tf_impl.distributed ...                                                     # on every host

The model and the optimizer's velocities are mirrored variables (built under strategy.scope()); replica r of
R takes rows [r G/R, (r+1) G/R) of each global batch of G, and the optimizer SUMS the replicas' gradients
(Keras's all-reduce). So each replica's loss is its mean times its share of the global batch, b/G: the sum of
the replicas' gradients is then the gradient of the global batch's mean loss, the one-device step's.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_parity.common import Spec, nchw_to_nhwc  # noqa: E402
from alexnet_parity.common.optim import PaperSGD as PaperSGDConfig  # noqa: E402

from .model import build_model, export_weights  # noqa: E402
from .train import loss_fn, make_optimizer, optimizer_state  # noqa: E402


def logical_cpus(n: int) -> list[str]:
    """Split the CPU into n logical devices, for MirroredStrategy on a machine without GPUs (tests, trials).
    Must run before TensorFlow initialises its runtime, i.e. before the first op or device query."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def make_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG is set (create it first thing in the program, as TF asks),
    else MirroredStrategy over `devices`: by default every GPU, or failing that every (logical) CPU."""
    if "TF_CONFIG" in os.environ:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def distribute(strategy: tf.distribute.Strategy, batch: np.ndarray):
    """A global batch as per-replica values: replica r of R (over all workers) gets rows [r b, (r+1) b)."""
    replicas, n = strategy.num_replicas_in_sync, len(batch)
    if n % replicas:
        raise ValueError(f"a global batch of {n} does not split evenly over {replicas} replicas")
    b = n // replicas

    def rows(context: tf.distribute.InputContext):
        r = context.replica_id_in_sync_group
        return tf.convert_to_tensor(batch[r * b:(r + 1) * b])

    return strategy.experimental_distribute_values_from_function(rows)


def independent_dropout(strategy: tf.distribute.Strategy, model: keras.Model, seed: int) -> None:
    """Give every replica its own dropout masks. Keras's Dropout draws from a SeedGenerator whose state,
    made under the strategy, is one mirrored variable: every replica would draw the same masks for its rows
    (row i of replica 1 dropped exactly as row i of replica 0). The state becomes a sync-on-read variable
    (one value per replica, each advanced by its own replica) and replica r starts at (seed + r, 0)."""
    generators = [layer.seed_generator for layer in model.layers
                  if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]  # rate 0 draws nothing
    with strategy.scope():
        for generator in generators:
            generator.state = keras.Variable(generator.state.numpy(), dtype=generator.state.dtype, trainable=False,
                                             synchronization="on_read", aggregation="only_first_replica",
                                             name="seed_generator_state")

    def set_streams():
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        for i, generator in enumerate(generators):
            start = tf.stack([seed + 1_000_003 * i + r, 0])  # distinct per layer and per replica
            generator.state.assign(tf.cast(start, generator.state.dtype))

    strategy.run(tf.function(set_streams))


def make_train_step(strategy: tf.distribute.Strategy, model: keras.Model, optimizer,
                    global_batch: int) -> Callable:
    """step(x, y) on per-replica values (distribute()) -> the global batch's mean loss: each replica's
    forward and backward, the optimizer's all-reduce (a sum) and the paper's update, as one tf.function."""
    variables = model.trainable_variables

    def replica_step(x, y):
        share = tf.cast(tf.shape(x)[0], tf.float32) / global_batch
        with tf.GradientTape() as tape:
            loss = loss_fn(model(x, training=True), y) * share
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function
    def step(x, y):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x, y)), axis=None)

    return step


def train(spec: Spec, weights: dict | None, batches: Iterable, *, lr: float | None = None,
          cfg: PaperSGDConfig = PaperSGDConfig(), strategy: tf.distribute.Strategy | None = None,
          seed: int = 0, on_step: Callable[[int, float], None] | None = None, return_velocity: bool = False):
    """One step of the paper's SGD per global batch (x NHWC, labels) of `batches`, data-parallel over the
    strategy's replicas (make_strategy() by default); on several workers each passes the same global
    batches. weights=None draws the variant's init with `seed`; each replica's dropout draws from its own
    stream (independent_dropout). on_step(step, the global batch's mean loss) is called where given.
    Returns the canonical weights, and with return_velocity=True also the optimizer's velocities (the last
    update; what resuming needs). The step is a tf.function without XLA (tested on CPUs only)."""
    strategy = strategy or make_strategy()
    with strategy.scope():
        model = build_model(spec, weights, seed=seed)
        optimizer = make_optimizer(model, lr, cfg)
    independent_dropout(strategy, model, seed)
    step_fns: dict[int, Callable] = {}
    for step, (x, y) in enumerate(batches, 1):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
        if len(x) not in step_fns:
            step_fns[len(x)] = make_train_step(strategy, model, optimizer, len(x))
        loss = step_fns[len(x)](distribute(strategy, x), distribute(strategy, y))
        if on_step is not None:
            on_step(step, float(loss))
    weights = export_weights(model)
    return (weights, optimizer_state(optimizer)) if return_velocity else weights


def main(argv=None) -> None:
    """A data-parallel run on synthetic images (training.Synthetic through the paper's augmentation): checks
    a cluster's setup end to end and prints the global loss per step on the chief."""
    from alexnet_parity.training.smoke import save_weights, smoke_data, smoke_parser, step_logger
    parser = smoke_parser("python -m alexnet_parity.tf_impl.distributed", main.__doc__, split_over="replicas", chief="the chief")
    parser.add_argument("--cpus", type=int, help="split the CPU into this many logical devices (no GPUs)")
    args = parser.parse_args(argv)

    if args.cpus:
        logical_cpus(args.cpus)
    strategy = make_strategy()
    chief = strategy.cluster_resolver is None or strategy.cluster_resolver.task_id == 0
    spec, data = smoke_data(args)
    if chief:
        print(f"{spec.describe()}: {strategy.num_replicas_in_sync} replicas x "
              f"{args.batch_size // strategy.num_replicas_in_sync} images", flush=True)
    weights = train(spec, None, ((nchw_to_nhwc(x), y) for x, y in data), lr=args.lr, strategy=strategy,
                    seed=args.seed, on_step=step_logger(chief))
    save_weights(args, spec, weights, chief)


if __name__ == "__main__":
    main()
