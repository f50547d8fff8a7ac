"""Data-parallel training on each framework's own engine is the one-device step on the same global batch:
torch DistributedDataParallel over 2 gloo processes (torchrun), TF MirroredStrategy over 2 logical CPUs, JAX
over 2 host devices (a Mesh, the batch sharded by NamedSharding); and, marked slow, the several-host paths on
this one machine: TF MultiWorkerMirroredStrategy over 2 workers from TF_CONFIG, JAX over 2 processes joined by
jax.distributed.initialize. After 1 and after 3 steps of the paper's SGD the weights and the velocities (the
last update itself) match one device's within TOL per tensor.

Each run is in subprocesses (the device split must precede the framework's start); process 0 also trains the
one-device reference with the framework's own train_step. Dropout is off (rate 0 in the spec) so that a step
is deterministic. Caffe's variant: grouped convs, LRN and its bias multipliers (lr x2, no decay).
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from alexnet_parity.common import get_spec, init_weights, nchw_to_nhwc, smallest_input_size

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # max|a - b| / max|b| per tensor
STEPS = (1, 3)
GLOBAL_BATCH = 4
LR = 0.01
DEVICES = 2


def no_dropout(spec):
    return spec.replace_layers("dropout", rate=0.0)


SPEC = no_dropout(get_spec("caffe", input_size=smallest_input_size("caffe"), num_classes=10))
START = init_weights(SPEC, seed=0)  # the paper's own init and lr: steps that move every tensor, and stay sane


def global_batches(spec, seed=1):
    """NCHW images at Caffe's pixel scale (the LRN far from the identity) and labels, one per step."""
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((GLOBAL_BATCH, *spec.input_shape)) * 50).astype(np.float32),
             rng.integers(0, spec.num_classes, GLOBAL_BATCH)) for _ in range(max(STEPS))]


# --- the workers: data-parallel (the code under test); process 0 also one device with train_step -------
PRELUDE = """
import os, pickle, sys
import numpy as np
spec, weights, batches, lr, steps = pickle.load(open(sys.argv[1], "rb"))
rows = np.arange(len(batches[0][0]))  # a global batch of row numbers, to see who gets which

def one_device(impl, train):
    model = impl.build_model(spec, weights)
    opt = train.make_optimizer(model, lr)
    out = {}
    for step, (x, y) in enumerate(batches, 1):
        train.train_step(model, opt, x, y)
        if step in steps:
            out[step] = impl.export_weights(model), train.optimizer_state(opt)
    return out

def finish(index, replicas, rows, parallel, impl, train, **extra):
    out = {"replicas": replicas, "rows": rows, "parallel": parallel, **extra}
    if index == 0:
        out["one_device"] = one_device(impl, train)
    pickle.dump(out, open(f"{sys.argv[2]}.{index}", "wb"))
"""

WORKERS = {
    "torch": """
import torch.distributed as dist
from alexnet_parity import torch_impl
from alexnet_parity.torch_impl import distributed, train
rank, world = distributed.setup()
parallel = {n: distributed.train(spec, weights, batches[:n], lr=lr, return_velocity=True) for n in steps}
finish(rank, world, [distributed.shard(rows, rank, world).tolist()], parallel, torch_impl, train)
dist.destroy_process_group()
""",
    "tf": """
from alexnet_parity.tf_impl import distributed
if "TF_CONFIG" not in os.environ:  # one host: its CPU as 2 devices
    distributed.logical_cpus(2)
from alexnet_parity import tf_impl
from alexnet_parity.tf_impl import train
strategy = distributed.make_strategy()
index = strategy.cluster_resolver.task_id if strategy.cluster_resolver else 0
local = strategy.experimental_local_results(distributed.distribute(strategy, rows))
parallel = {n: distributed.train(spec, weights, batches[:n], lr=lr, strategy=strategy, return_velocity=True)
            for n in steps}
# dropout: each replica its own masks (Keras alone would give every replica the same)
import keras, tensorflow as tf
with strategy.scope():
    inputs = keras.Input((64,))
    dropout = keras.Model(inputs, keras.layers.Dropout(0.5)(inputs))
distributed.independent_dropout(strategy, dropout, seed=0)
masks = tf.function(lambda x: strategy.run(lambda x: dropout(x, training=True), args=(x,)))
masks = strategy.experimental_local_results(masks(distributed.distribute(strategy, np.ones((2, 64), np.float32))))
finish(index, strategy.num_replicas_in_sync, [v.numpy().tolist() for v in local], parallel, tf_impl, train,
       masks=[m.numpy() for m in masks])
""",
    "jax": """
import jax
from alexnet_parity import jax_impl
from alexnet_parity.jax_impl import distributed, train
if len(sys.argv) > 3:  # several processes: coordinator, count, this one's id
    distributed.initialize(coordinator_address=sys.argv[3], num_processes=int(sys.argv[4]),
                           process_id=int(sys.argv[5]))
mesh = distributed.make_mesh()
shards = sorted(distributed.shard_batch(mesh, rows).addressable_shards, key=lambda s: s.index[0].start)
parallel = {n: distributed.train(spec, weights, batches[:n], lr=lr, mesh=mesh, return_velocity=True)
            for n in steps}
finish(jax.process_index(), mesh.size, [np.asarray(s.data).tolist() for s in shards], parallel, jax_impl, train)
""",
}
IMPORTS = {"torch": ["torch"], "tf": ["tensorflow", "keras"], "jax": ["jax", "flax"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(framework: str, tmp: Path, hosts: int = 1) -> list[dict]:
    """Run the framework's worker on DEVICES devices: one process with DEVICES devices (TF, JAX), DEVICES
    processes of one device each (torch under torchrun; TF and JAX with hosts=DEVICES, as if on several
    hosts). Returns each process's output, by index."""
    for module in IMPORTS[framework]:
        pytest.importorskip(module)
    nhwc = framework != "torch"
    batches = [(nchw_to_nhwc(x) if nhwc else x, y) for x, y in global_batches(SPEC)]
    (tmp / "in.pkl").write_bytes(pickle.dumps((SPEC, START, batches, LR, STEPS)))
    (tmp / "worker.py").write_text(PRELUDE + textwrap.dedent(WORKERS[framework]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    script = [sys.executable, str(tmp / "worker.py"), str(tmp / "in.pkl"), str(tmp / "out")]
    if framework == "torch":
        commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
                     str(DEVICES), "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *script[1:]]]
        envs = [env]
    elif hosts == 1:
        commands, envs = [script], [env]
        if framework == "jax":
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}"
    elif framework == "tf":
        workers = [f"127.0.0.1:{free_port()}" for _ in range(hosts)]
        commands = [script] * hosts
        envs = [dict(env, TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker",
                                                                                       "index": i}}))
                for i in range(hosts)]
    else:
        coordinator = f"127.0.0.1:{free_port()}"
        commands = [[*script, coordinator, str(hosts), str(i)] for i in range(hosts)]
        envs = [env] * hosts
    procs = [subprocess.Popen(cmd, cwd=tmp, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, e in zip(commands, envs)]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{framework} worker failed:\n{log[-8000:]}"
    return [pickle.loads(path.read_bytes()) for path in sorted(tmp.glob("out.*"))]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def worst(a: dict, b: dict) -> tuple[float, str]:
    assert sorted(a) == sorted(b)
    errors = {name: rel(a[name], b[name]) for name in b}
    name = max(errors, key=errors.get)
    return errors[name], name


def check(label: str, outs: list[dict]) -> None:
    """Every process ran on all DEVICES, each device took its rows of the batch, and every process's
    weights and velocities after each of STEPS are one device's (the velocity is the last update itself,
    compared without the cancellation of w_after - w_start in float32)."""
    assert [out["replicas"] for out in outs] == [DEVICES] * len(outs), f"{label}: not {DEVICES} devices"
    rows = [r for out in outs for r in out["rows"]]
    assert rows == [[0, 1], [2, 3]], f"{label} split the global batch as {rows}"
    reference = outs[0]["one_device"]
    for index, out in enumerate(outs):
        for steps in STEPS:
            (weights, velocity), (weights_1, velocity_1) = out["parallel"][steps], reference[steps]
            err_w, name_w = worst(weights, weights_1)
            err_v, name_v = worst(velocity, velocity_1)
            print(f"{label} process {index}, after {steps} step(s): weights {err_w:.2e} ({name_w}), "
                  f"velocities {err_v:.2e} ({name_v})")
            assert err_w < TOL, f"{label}, {steps} step(s): {name_w} differs by {err_w:.2e} relative"
            assert err_v < TOL, f"{label}, {steps} step(s): {name_v}'s velocity differs by {err_v:.2e} relative"
    assert all(np.abs(v).max() > 0 for v in reference[1][1].values()), "a step that moves nothing would pass"
    if "masks" in outs[0]:  # TF: one row per replica
        masks = [m for out in outs for m in out["masks"]]
        assert len(masks) == DEVICES and all(0 < (m == 0).mean() < 1 for m in masks)
        assert not np.array_equal(masks[0], masks[1]), f"{label}: the replicas drew the same dropout masks"


@pytest.mark.parametrize("framework", list(WORKERS))
def test_data_parallel_is_one_device(framework, tmp_path):
    check(framework, launch(framework, tmp_path))


@pytest.mark.slow  # ~35 s a framework: CI proves the one-host data-parallel step above; -m slow runs this one
@pytest.mark.parametrize("framework", ["tf", "jax"])
def test_several_hosts_is_one_device(framework, tmp_path):
    """TF MultiWorkerMirroredStrategy from TF_CONFIG, JAX processes joined by jax.distributed.initialize:
    two processes of one device each, on this machine. (torch's several hosts are torchrun's concern: the
    processes run the same code as here.)"""
    check(f"{framework} x{DEVICES} hosts", launch(framework, tmp_path, hosts=DEVICES))


SMOKE = {  # each impl's `distributed` command line, on 2 devices, as docs/distributed.md launches it
    "torch": lambda: [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                      "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "alexnet_parity.torch_impl.distributed"],
    "tf": lambda: [sys.executable, "-m", "alexnet_parity.tf_impl.distributed", "--cpus", "2"],
    "jax": lambda: [sys.executable, "-m", "alexnet_parity.jax_impl.distributed"],
}


# CI runs torch's command line; tf's and jax's run the same step that test_data_parallel_is_one_device checks in CI
@pytest.mark.parametrize("framework", [f if f == "torch" else pytest.param(f, marks=pytest.mark.slow) for f in SMOKE])
def test_command_line_smoke_run(framework, tmp_path):
    """`python -m <impl>.distributed`: a short synthetic run prints the global loss per step once (the chief
    only), splits the batch over 2 devices and saves loadable canonical weights."""
    for module in IMPORTS[framework]:
        pytest.importorskip(module)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2")
    env.pop("TF_CONFIG", None)
    out = tmp_path / "w.safetensors"
    args = ["--variant", "slim-v2", "--input-size", "67", "--batch-size", "4", "--steps", "2", "--out", str(out)]
    run = subprocess.run([*SMOKE[framework](), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("step ")] == ["step 1", "step 2"]
    assert any(line.startswith("slim-v2 (input 67, 10 classes): ") and "x 2 images" in line for line in lines)
    from alexnet_parity.weights_convert import canonical
    spec, weights = canonical.load(out)
    assert spec == get_spec("slim-v2", input_size=67, num_classes=10)
    assert {k: v.shape for k, v in weights.items()} == {k: tuple(s) for k, s in spec.weight_shapes().items()}
