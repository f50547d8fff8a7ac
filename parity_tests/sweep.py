"""The parity sweep: N configs drawn reproducibly from a seed (variant, input size, batch, weight/input seed,
thread count), each run through every engine in eval mode and measured as run_parity measures the suite.

Thread counts are fixed when a framework starts (TF's pools, XLA's flags, torch's inter-op pool), so the configs
of each thread count run in their own worker process: launched with the BLAS/OpenMP environment for that count,
it gives every engine its thread setting (the registry's set_threads) before anything computes, then measures
that the setting took effect: during a warm matmul (or forward pass), how many of the process's OS threads did
work. A framework that reports another count, or that works on more than one thread at threads=1, fails the
sweep. Workers are replaced as they grow (RESTART_EVERY, RSS_LIMIT; each fresh one is probed again), and a config
whose worker dies (the OOM killer's SIGKILL) runs once more in a fresh worker: reported in `retried`, and an error
if the retry's worker dies too. No config is dropped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from alexnet_parity.common import VARIANTS, get_spec
from alexnet_parity.common.engines import get_engine, reference
from alexnet_parity.common.spec import smallest_input_size

from .core import TOLERANCE, ParityResult, failures, run_parity

SIZE_ABOVE_DEFAULT = 32  # input sizes run from the smallest a variant takes to its own size + this
BATCHES = range(1, 9)
THREADS = (1, 2)
SEEDS = 2**31 - 2  # weight seed s, input seed s + 1 (run_parity's rule)
BUSY_SHARE = 0.1  # a thread "did work" in the probe when it used this share of the process's CPU time or more
PROBE_MATMUL, PROBE_REPEATS = 2048, 4  # about 70 GFLOP: a second of CPU or more, so 10 ms ticks resolve shares
# A worker's memory grows with every config it runs (each new input size and batch compiles and caches new XLA/TF
# programs and grows the allocators' pools), so a worker is replaced by a fresh one after RESTART_EVERY configs, or
# sooner once its resident memory after a config passes RSS_LIMIT. docs/parity.md gives the growth measured.
RESTART_EVERY = 25
RSS_LIMIT = 4 * 2**30


@dataclass(frozen=True)
class SweepConfig:
    index: int
    variant: str
    input_size: int
    batch: int
    seed: int
    threads: int

    @property
    def id(self) -> str:
        return (f"#{self.index} {self.variant}@{self.input_size} batch={self.batch} seed={self.seed} "
                f"threads={self.threads}")


def input_sizes(variant: str) -> range:
    """The sizes the sweep draws for a variant: every size from the smallest it takes (geometry decides) to its
    default + SIZE_ABOVE_DEFAULT, which covers the suite's own odd sizes (256) and bounds a config's cost near
    that of the variant's own size (at batch 8, tens of seconds on 2 cores for all engines and the reference)."""
    return range(smallest_input_size(variant), VARIANTS[variant].input_size + SIZE_ABOVE_DEFAULT + 1)


def draw(n: int, seed: int = 0, variants: tuple[str, ...] | None = None) -> list[SweepConfig]:
    """N configs, a function of (n, seed, variants) only: config i is the same in every longer sweep."""
    if n < 1:
        raise ValueError(f"--sweep: the number of configs must be at least 1, got {n}")
    names = tuple(variants or VARIANTS)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        variant = names[int(rng.integers(len(names)))]
        sizes = input_sizes(variant)
        out.append(SweepConfig(i, variant, int(rng.integers(sizes.start, sizes.stop)),
                               int(rng.integers(BATCHES.start, BATCHES.stop)), int(rng.integers(SEEDS)),
                               THREADS[int(rng.integers(len(THREADS)))]))
    return out


# --- the worker: one process per thread count --------------------------------------------------------------

def thread_env(n: int) -> dict[str, str]:
    """What a worker for n threads is started with: the OpenMP and BLAS pools read these when they load, and
    each engine's record adds the environment it needs."""
    return {"OMP_NUM_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def _thread_cpu() -> dict[int, float]:
    import psutil
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def busy_threads(fn) -> tuple[int, float]:
    """(how many OS threads did BUSY_SHARE or more of the CPU work while fn ran, the CPU seconds it took)."""
    before = _thread_cpu()
    fn()
    used = [t - before.get(tid, 0.0) for tid, t in _thread_cpu().items()]
    total = sum(u for u in used if u > 0)
    return sum(1 for u in used if total and u >= BUSY_SHARE * total), total


def probe(engine, n: int) -> dict:
    """How many threads the engine's CPU work runs on, measured: its bench runner's matmul where it has one (pure
    compute: a forward pass also builds and compiles, on threads of their own), else a warm forward pass."""
    from .core import parity_input, parity_weights
    runner = engine.make_runner("cpu") if engine.runner is not None else None
    if runner is not None and hasattr(runner, "matmul"):
        fn, what = runner.matmul(PROBE_MATMUL), f"matmul {PROBE_MATMUL}"
    else:
        spec = get_spec(next(iter(VARIANTS)))
        weights, x = parity_weights(spec), parity_input(spec, batch=1)
        fn, what = (lambda: engine.run_activations(spec, weights, x)), f"forward {spec.variant} batch 1"
    fn()  # the first run compiles and starts the pools
    busy, cpu = busy_threads(lambda: [fn() for _ in range(PROBE_REPEATS if what.startswith("matmul") else 1)])
    return {"probe": what, "busy": busy, "cpu_s": round(cpu, 2)}


def probe_engine(name: str, n: int) -> dict:
    """probe(), in the process that runs the engine: where this one cannot (keras-jax, keras-torch beside
    TensorFlow's Keras), in the engine's own worker (common.workers), which set_threads configured."""
    engine = get_engine(name)
    if engine.runs_here():
        return probe(engine, n)
    from alexnet_parity.common import workers
    return workers.run(engine.env, "alexnet_parity.parity_tests.sweep:probe_engine", name, n)  # not __name__: the worker runs as __main__


def worker(inp, out) -> None:
    """Reads the job ({"threads", "frameworks"}), sets the threads in every engine and probes them, then runs
    each config line it reads; one JSON line per event to `out`."""
    job = json.loads(inp.readline())
    n, frameworks = job["threads"], tuple(job["frameworks"])
    names = tuple(dict.fromkeys((*frameworks, reference().name)))
    try:
        reported = {name: get_engine(name).set_threads(n) for name in names}
        engines = {name: {"reported": reported[name], **probe_engine(name, n)} for name in names}
    except Exception as err:
        _emit(out, {"event": "fatal", "error": f"setting {n} threads: {type(err).__name__}: {err}"})
        return
    _emit(out, {"event": "threads", "threads": n, "engines": engines, "pid": os.getpid(), **memory()})
    for line in inp:
        c = json.loads(line)
        config = SweepConfig(**c)
        started = time.perf_counter()
        try:
            r = run_parity(config.variant, {"input_size": config.input_size}, frameworks=frameworks,
                           batch=config.batch, seed=config.seed)
            _emit(out, {"event": "result", "config": c, "result": r.to_dict(),
                        "seconds": round(time.perf_counter() - started, 2), **memory()})
        except Exception as err:  # the config fails, named; the sweep goes on
            _emit(out, {"event": "error", "config": c, "error": f"{type(err).__name__}: {err}", **memory()})


def memory() -> dict:
    """This process's resident memory now and at its peak, in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource
    import psutil
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss": psutil.Process().memory_info().rss, "peak_rss": peak if sys.platform == "darwin" else peak * 1024}


def _emit(out, record: dict) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def _worker_main() -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle: it reports, then kills us
    # frameworks print to stdout; the parent reads only our JSON lines, on a private copy of it
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    worker(sys.stdin, out)


# --- the parent: launch the workers, gather, summarise ----------------------------------------------------------

@dataclass
class SweepReport:
    configs: list[SweepConfig]
    frameworks: tuple[str, ...]
    tolerance: float
    threads: dict  # thread count -> engine -> {"reported", "busy", "cpu_s"}: the first worker's probe of that count
    results: dict  # config index -> ParityResult
    errors: dict  # config index -> why it could not run
    seconds: float
    attempted: int = 0  # configs run (all of them unless interrupted)
    interrupted: bool = False
    workers: list = field(default_factory=list)  # one record per worker process started: see _Worker.record
    retried: dict = field(default_factory=dict)  # config index -> how its first worker died (it ran again, fresh)

    def worst_by_pair(self) -> dict[str, list[tuple[float, str, int]]]:
        """who ("torch", "torch~keras") -> [(max over layers, that layer, config index)] over the configs."""
        out: dict[str, list] = {}
        for i, r in self.results.items():
            for who, table in (*r.vs_reference.items(), *r.pairs.items()):
                layer = max(table, key=lambda k: table[k])
                out.setdefault(who, []).append((table[layer], layer, i))
        return out

    def stats(self) -> dict[str, dict]:
        by_index = {c.index: c for c in self.configs}
        out = {}
        for who, rows in self.worst_by_pair().items():
            errs = np.array([e for e, _, _ in rows])
            worst = max(rows)
            out[who] = {"configs": len(rows), "min": float(errs.min()), "median": float(np.median(errs)),
                        "p95": float(np.percentile(errs, 95)), "max": worst[0], "max_layer": worst[1],
                        "max_config": by_index[worst[2]].id}
        return out

    def peak_rss(self) -> int:
        """The largest resident memory any worker reached (bytes)."""
        return max((w["peak_rss"] for w in self.workers), default=0)

    def failures(self) -> list[str]:
        by_index = {c.index: c for c in self.configs}
        bad = [f"interrupted after {self.attempted} of {len(self.configs)} configs"] if self.interrupted else []
        bad += [f"{by_index[i].id}: {why}" for i, why in sorted(self.errors.items())]
        bad += [f"{by_index[i].id}: {f}" for i, r in sorted(self.results.items()) for f in failures(r, self.tolerance)]
        bad += [f"threads={n}: {why}" for n, why in self.thread_problems()]
        return bad

    def thread_problems(self) -> list[tuple[int, str]]:
        """A thread setting that did not take, in any worker: a framework that reports another count, or work spread
        over more than one thread at threads=1. (At 2, XLA hands successive work to different threads of its pool,
        and a loaded machine can leave a pool's second thread idle, so only the count it reports is checked there.)"""
        bad = []
        for w in self.workers:
            n = w["threads"]
            for name, p in w["engines"].items():
                if p["reported"] not in (n, None):
                    bad.append((n, f"{name} reports {p['reported']} threads (worker {w['pid']})"))
                if n == 1 and p["busy"] != 1:
                    bad.append((1, f"{name} ran on {p['busy']} threads in its {p['probe']} (worker {w['pid']})"))
        return list(dict.fromkeys(bad))

    def to_dict(self) -> dict:
        return {"tolerance": self.tolerance, "frameworks": list(self.frameworks), "seconds": round(self.seconds, 1),
                "attempted": self.attempted, "interrupted": self.interrupted, "peak_rss": self.peak_rss(),
                "threads": self.threads, "workers": self.workers, "retried": self.retried,
                "stats": self.stats(), "failures": self.failures(),
                "configs": [{**asdict(c), "id": c.id,
                             **({"max_error": self.results[c.index].worst()[0],
                                 "worst": self.results[c.index].worst()[1]} if c.index in self.results else
                                {"error": self.errors.get(c.index, "not run")}),
                             **({"retried": self.retried[c.index]} if c.index in self.retried else {})}
                            for c in self.configs]}


def worker_env(threads: int, frameworks: tuple[str, ...]) -> dict[str, str]:
    """The first engine to name a variable sets it (KERAS_BACKEND: keras's TensorFlow; keras-jax and keras-torch
    then run in workers of their own, started from the sweep worker with its thread environment)."""
    env = {**os.environ, **thread_env(threads)}
    env.pop("KERAS_BACKEND", None)  # the sweep's own engines decide, not the shell's
    for name in frameworks:
        for key, value in get_engine(name).env.items():
            env.setdefault(key, value)
    return env


def worker_command() -> list[str]:
    return [sys.executable, "-m", __name__]


class _Worker:
    """A worker process for one thread count, fed one config at a time. `died` is set once the process is gone
    (killed, crashed); `fatal` holds why it cannot run configs (it died, or the thread setting failed)."""

    def __init__(self, threads: int, frameworks: tuple[str, ...]):
        self.threads = threads
        self.died = False
        self.proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=worker_env(threads, frameworks), text=True)
        self.record = {"threads": threads, "pid": self.proc.pid, "configs": [], "engines": {}, "rss": 0,
                       "peak_rss": 0}
        self.send({"threads": threads, "frameworks": list(frameworks)})
        first = self.receive()
        self.fatal = first["error"] if first["event"] == "fatal" else None
        self.engines = self.record["engines"] = first.get("engines", {})
        self._memory(first)

    def send(self, record: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(record) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it is gone: receive() says how
            pass

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.died = True
            self.fatal = (f"the threads={self.threads} worker (pid {self.proc.pid}) exited with status "
                          f"{self.proc.wait()}")
            return {"event": "fatal", "error": self.fatal}
        return json.loads(line)

    def run(self, config: SweepConfig) -> dict:
        self.record["configs"].append(config.index)
        self.send(asdict(config))
        record = self.receive()
        self._memory(record)
        return record

    def _memory(self, record: dict) -> None:
        if "rss" in record:
            self.record["rss"] = record["rss"]
            self.record["peak_rss"] = max(self.record["peak_rss"], record["peak_rss"])

    def spent(self, restart_every: int, rss_limit: int) -> bool:
        """Whether the next config goes to a fresh worker instead."""
        return (self.died or len(self.record["configs"]) >= restart_every
                or self.record["rss"] > rss_limit and bool(self.record["configs"]))

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # it was killed
            pass
        self.proc.wait()


def sweep(n: int, seed: int = 0, frameworks: tuple[str, ...] = (), tolerance: float = TOLERANCE,
          variants: tuple[str, ...] | None = None, progress=None, restart_every: int = RESTART_EVERY,
          rss_limit: int = RSS_LIMIT) -> SweepReport:
    """Draw n configs and run them in order, each in a worker process of its thread count (one per count alive at
    a time, one computing at a time: a second would only compete for the same cores). A worker is replaced after
    restart_every configs or once its memory passes rss_limit; a config whose worker dies runs once more in a fresh
    worker (the death is reported in `retried`), and is an error if that one dies too."""
    if restart_every < 1:
        raise ValueError(f"--sweep: a worker must run at least 1 config before its restart, got {restart_every}")
    configs = draw(n, seed, variants)
    unset = [name for name in frameworks if get_engine(name).threads is None]
    if unset:
        raise ValueError(f"--sweep: engine {unset[0]} has no thread setting (its record's threads=); "
                         "leave it out with --frameworks")
    report = SweepReport(configs, tuple(frameworks), tolerance, {}, {}, {}, 0.0)
    started, workers = time.perf_counter(), {}

    def worker_for(threads: int) -> _Worker:
        w = workers.get(threads)
        if w is not None and (w.fatal and not w.died or not w.spent(restart_every, rss_limit)):
            return w  # alive and not spent, or its thread setting failed (a fresh one would fail the same way)
        if w is not None:
            w.close()
        w = workers[threads] = _Worker(threads, tuple(frameworks))
        report.workers.append(w.record)
        report.threads.setdefault(threads, w.engines)
        if progress:
            progress(f"threads={threads} worker pid {w.proc.pid} ({len(report.workers)} started): " + (
                w.fatal or ", ".join(f"{k} reports {v['reported']}, {v['busy']} busy in {v['probe']}"
                                     for k, v in w.engines.items())))
        return w

    try:
        for config in configs:
            report.attempted = config.index + 1
            for attempt in (1, 2):
                w = worker_for(config.threads)
                record = {"event": "fatal", "error": w.fatal} if w.fatal else w.run(config)
                if record["event"] == "result":
                    r = report.results[config.index] = _result(record["result"])
                    worst, where = r.worst()
                    line = (f"{worst:.1e} ({where}) {record['seconds']:.1f} s, worker rss "
                            f"{record['rss'] / 2**30:.2f} GiB" + (" FAIL" if failures(r, tolerance) else ""))
                elif w.died and attempt == 1:  # killed or crashed: once more, in a fresh worker
                    report.retried[config.index] = record["error"]
                    if progress:
                        progress(f"{config.index + 1}/{n} {config.id}: {record['error']}; running it again in a "
                                 "fresh worker")
                    continue
                else:
                    retry = " (its retry's worker too)" if attempt == 2 else ""
                    report.errors[config.index] = record["error"] + retry
                    line = f"ERROR {report.errors[config.index]}"
                if progress:
                    progress(f"{config.index + 1}/{n} {config.id}: {line}")
                break
    except KeyboardInterrupt:  # stop here and report the configs done: a prefix of the same sweep
        report.interrupted = True
        report.errors.pop(config.index, None)
        report.retried.pop(config.index, None)
        report.attempted = config.index
        for w in workers.values():
            w.proc.kill()
    finally:
        for w in workers.values():
            w.close()
    report.seconds = time.perf_counter() - started
    return report


def _result(d: dict) -> ParityResult:
    return ParityResult(d["variant"], d["overrides"], d["device"], d["layers"], d["vs_reference"], d["pairs"],
                        d["errors"])


if __name__ == "__main__":
    _worker_main()
