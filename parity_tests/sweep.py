"""The parity sweep: N configs drawn reproducibly from a seed (variant, input size, batch, weight/input seed,
thread count), each run through every engine in eval mode and measured as run_parity measures the suite.

Thread counts are fixed when a framework starts (TF's pools, XLA's flags, torch's inter-op pool), so the configs
of each thread count run in their own worker process: launched with the BLAS/OpenMP environment for that count,
it gives every engine its thread setting (the registry's set_threads) before anything computes, then measures
that the setting took effect: during a warm matmul (or forward pass), how many of the process's OS threads did
work. A framework that reports another count, or that works on more than one thread at threads=1, fails the
sweep.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

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


def worker(inp, out) -> None:
    """Reads the job ({"threads", "frameworks"}), sets the threads in every engine and probes them, then runs
    each config line it reads; one JSON line per event to `out`."""
    job = json.loads(inp.readline())
    n, frameworks = job["threads"], tuple(job["frameworks"])
    names = tuple(dict.fromkeys((*frameworks, reference().name)))
    try:
        reported = {name: get_engine(name).set_threads(n) for name in names}
        engines = {name: {"reported": reported[name], **probe(get_engine(name), n)} for name in names}
    except Exception as err:
        _emit(out, {"event": "fatal", "error": f"setting {n} threads: {type(err).__name__}: {err}"})
        return
    _emit(out, {"event": "threads", "threads": n, "engines": engines})
    for line in inp:
        c = json.loads(line)
        config = SweepConfig(**c)
        started = time.perf_counter()
        try:
            r = run_parity(config.variant, {"input_size": config.input_size}, frameworks=frameworks,
                           batch=config.batch, seed=config.seed)
            _emit(out, {"event": "result", "config": c, "result": r.to_dict(),
                        "seconds": round(time.perf_counter() - started, 2)})
        except Exception as err:  # the config fails, named; the sweep goes on
            _emit(out, {"event": "error", "config": c, "error": f"{type(err).__name__}: {err}"})


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
    threads: dict  # thread count -> engine -> {"reported", "busy", "cpu_s"}
    results: dict  # config index -> ParityResult
    errors: dict  # config index -> why it could not run
    seconds: float
    attempted: int = 0  # configs run (all of them unless interrupted)
    interrupted: bool = False

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

    def failures(self) -> list[str]:
        by_index = {c.index: c for c in self.configs}
        bad = [f"interrupted after {self.attempted} of {len(self.configs)} configs"] if self.interrupted else []
        bad += [f"{by_index[i].id}: {why}" for i, why in sorted(self.errors.items())]
        bad += [f"{by_index[i].id}: {f}" for i, r in sorted(self.results.items()) for f in failures(r, self.tolerance)]
        bad += [f"threads={n}: {why}" for n, why in self.thread_problems()]
        return bad

    def thread_problems(self) -> list[tuple[int, str]]:
        """A thread setting that did not take: a framework that reports another count, or work spread over more
        than one thread at threads=1. (At 2, XLA hands successive work to different threads of its pool, and a
        loaded machine can leave a pool's second thread idle, so only the count it reports is checked there.)"""
        bad = []
        for n, engines in self.threads.items():
            for name, p in engines.items():
                if p["reported"] not in (int(n), None):
                    bad.append((int(n), f"{name} reports {p['reported']} threads"))
                if int(n) == 1 and p["busy"] != 1:
                    bad.append((1, f"{name} ran on {p['busy']} threads in its {p['probe']}"))
        return bad

    def to_dict(self) -> dict:
        return {"tolerance": self.tolerance, "frameworks": list(self.frameworks), "seconds": round(self.seconds, 1),
                "attempted": self.attempted, "interrupted": self.interrupted,
                "threads": self.threads, "stats": self.stats(), "failures": self.failures(),
                "configs": [{**asdict(c), "id": c.id,
                             **({"max_error": self.results[c.index].worst()[0],
                                 "worst": self.results[c.index].worst()[1]} if c.index in self.results else
                                {"error": self.errors.get(c.index, "not run")})} for c in self.configs]}


def worker_env(threads: int, frameworks: tuple[str, ...]) -> dict[str, str]:
    env = {**os.environ, **thread_env(threads)}
    for name in frameworks:
        env.update(get_engine(name).env)
    return env


class _Worker:
    """A worker process for one thread count, fed one config at a time."""

    def __init__(self, threads: int, frameworks: tuple[str, ...]):
        self.threads = threads
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=worker_env(threads, frameworks), text=True)
        self.send({"threads": threads, "frameworks": list(frameworks)})
        first = self.receive()
        self.fatal = first["error"] if first["event"] == "fatal" else None
        self.engines = first.get("engines", {})

    def send(self, record: dict) -> None:
        self.proc.stdin.write(json.dumps(record) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            return {"event": "fatal", "error": f"the threads={self.threads} worker exited with status "
                                               f"{self.proc.wait()}"}
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # it was killed
            pass
        self.proc.wait()


def sweep(n: int, seed: int = 0, frameworks: tuple[str, ...] = (), tolerance: float = TOLERANCE,
          variants: tuple[str, ...] | None = None, progress=None) -> SweepReport:
    """Draw n configs and run them in order, each in the worker process of its thread count (one per count, alive
    together, one computing at a time: a second would only compete for the same cores)."""
    configs = draw(n, seed, variants)
    unset = [name for name in frameworks if get_engine(name).threads is None]
    if unset:
        raise ValueError(f"--sweep: engine {unset[0]} has no thread setting (its record's threads=); "
                         "leave it out with --frameworks")
    report = SweepReport(configs, tuple(frameworks), tolerance, {}, {}, {}, 0.0)
    started, workers = time.perf_counter(), {}
    try:
        for config in configs:
            report.attempted = config.index + 1
            w = workers.get(config.threads)
            if w is None:
                w = workers[config.threads] = _Worker(config.threads, tuple(frameworks))
                report.threads[config.threads] = w.engines
                if progress:
                    progress(f"threads={config.threads}: " + (w.fatal or ", ".join(
                        f"{k} reports {v['reported']}, {v['busy']} busy in {v['probe']}" for k, v in w.engines.items())))
            if w.fatal:
                report.errors[config.index] = w.fatal
            else:
                w.send(asdict(config))
                record = w.receive()
                if record["event"] == "result":
                    r = report.results[config.index] = _result(record["result"])
                    worst, where = r.worst()
                    line = f"{worst:.1e} ({where}) {record['seconds']:.1f} s" + (" FAIL" if failures(r, tolerance) else "")
                else:
                    report.errors[config.index] = record["error"]
                    w.fatal = record["error"] if record["event"] == "fatal" else None
                    line = f"ERROR {record['error']}"
                if progress:
                    progress(f"{config.index + 1}/{n} {config.id}: {line}")
    except KeyboardInterrupt:  # stop here and report the configs done: a prefix of the same sweep
        report.interrupted = True
        report.errors.pop(config.index, None)
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
