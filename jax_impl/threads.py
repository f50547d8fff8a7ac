"""XLA's CPU threads, set for a worker process before JAX starts its backend."""
import os

from jax._src import xla_bridge


def set_threads(n: int) -> int:
    """XLA reads these once, when the first backend starts: the CPU client's thread pool (PJRT_NPROC), and
    single-threaded Eigen for n=1, else an intra-op pool of n."""
    if xla_bridge.backends_are_initialized():
        raise RuntimeError("JAX's backend has already started: its threads can no longer be set")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads"))]
    flags += [f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}", f"intra_op_parallelism_threads={n}"]
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ["PJRT_NPROC"] = str(n)
    return n
