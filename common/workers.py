"""Worker processes for engines that cannot run in this one.

Keras reads its backend once per process, at import: once this process's Keras runs TensorFlow, the keras-jax
and keras-torch engines need a process of their own. `call(engine, method, ...)` runs one of the engine's
numpy-in, numpy-out methods (run_activations, run_gradients, devices, set_threads) in a persistent worker
started with the engine's environment; the worker lives until this process exits, so its framework is imported
and warmed once, not per call. A call that configures the process (`configure`: set_threads) is made again, first,
in every worker that replaces one.

Requests and replies are pickled over the worker's stdin and stdout: both ends are this project's own code in
processes this one started, so nothing untrusted is unpickled. The worker's own prints go to stderr.

A worker's memory grows with every model it builds and compiles (framework caches: ~0.15 GiB a config measured in
the parity sweep's workers), so one whose resident memory passes RSS_LIMIT after a call is closed; the next call
starts a fresh one. ALEXNET_WORKER_RSS_GIB sets the limit (in GiB).
"""
from __future__ import annotations

import atexit
import importlib
import os
import pickle
import struct
import subprocess
import sys
from typing import Any, BinaryIO

RSS_LIMIT = int(float(os.environ.get("ALEXNET_WORKER_RSS_GIB", "2.5")) * 2**30)

# exceptions that cross the process boundary as themselves (by name); any other arrives as a RuntimeError
_REBUILT = {e.__name__: e for e in (ValueError, TypeError, RuntimeError, KeyError, AssertionError,
                                    NotImplementedError, FileNotFoundError)}


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 -- our own worker's reply (see the module's docstring)


class Worker:
    """One worker process with `env` added to this process's environment."""

    def __init__(self, env: dict[str, str]):
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, **self.env})

    def call(self, engine: str, method: str, *args, **kwargs):
        try:
            _send(self.proc.stdin, (engine, method, args, kwargs))
            status, value = _receive(self.proc.stdout)
        except (EOFError, BrokenPipeError, OSError):
            code = self.proc.wait()
            raise RuntimeError(f"the worker process of engine {engine} ({_describe(self.env)}) died "
                               f"(exit status {code}) during {method}") from None
        if self.rss() > RSS_LIMIT:
            self.close()
        if status == "ok":
            return value
        kind, message = value
        raise _REBUILT.get(kind, RuntimeError)(message)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        return _rss(self.proc.pid)

    def close(self) -> None:
        if self.alive():
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _describe(env: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(env.items()))


_workers: dict[tuple, Worker] = {}
# env key -> {(engine, method): (args, kwargs, what the first call returned)}: what a replacement worker is given
_settings: dict[tuple, dict] = {}


def _key(env: dict[str, str]) -> tuple:
    return tuple(sorted(env.items()))


def worker(env: dict[str, str]) -> Worker:
    """The live worker of this environment, started on first use (and again if it died or was closed for its
    memory: the new one is given this environment's settings first, and must report what the first one did)."""
    key = _key(env)
    if key not in _workers or not _workers[key].alive():
        fresh = _workers[key] = Worker(env)
        for (engine, method), (args, kwargs, first) in _settings.get(key, {}).items():
            again = fresh.call(engine, method, *args, **kwargs)
            if again != first:
                raise RuntimeError(f"a replacement worker of engine {engine} ({_describe(env)}) returned {again!r} "
                                   f"from {method}, the first one {first!r}")
    return _workers[key]


def call(engine, method: str, *args, **kwargs):
    """engine.<method>(*args, **kwargs), run in the worker of the engine's environment."""
    return worker(engine.env).call(engine.name, method, *args, **kwargs)


def configure(engine, method: str, *args, **kwargs):
    """call(), for a method that configures the worker's process (set_threads): kept, and made again in every
    worker that replaces this one, until close_all()."""
    value = call(engine, method, *args, **kwargs)
    _settings.setdefault(_key(engine.env), {})[(engine.name, method)] = (args, kwargs, value)
    return value


def run(env: dict[str, str], function: str, *args, **kwargs):
    """function(*args, **kwargs), "module:function" imported in the worker of `env` (a test's job that needs
    live models of another Keras backend: save a file there, load one, take a training step)."""
    return worker(env).call("", function, *args, **kwargs)


def _rss(pid: int | str = "self") -> int:
    """A process's resident memory in bytes (Linux's /proc; 0 where that cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            kb = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
        return int(kb) * 1024
    except (OSError, StopIteration, ValueError):
        return 0


def release_memory(above: int = 2**31) -> None:
    """Once this process holds more than `above` bytes: collect garbage and hand the C heap's free pages back to
    the system (glibc's malloc_trim). Frameworks free a model's buffers but glibc keeps the pages, so a long-lived
    process would hold the peak of everything it ran; below the bound the (costly) collection is skipped."""
    import ctypes
    import gc
    if _rss() <= above:
        return
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@atexit.register
def close_all() -> None:
    """Close every worker and forget their settings: the next call starts afresh."""
    for w in _workers.values():
        w.close()
    _workers.clear()
    _settings.clear()


def main() -> None:
    """The worker's loop: read a request, run it through the registry, reply, until stdin closes."""
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a framework's prints must not corrupt the replies
    from alexnet_parity.common.engines import get_engine
    while True:
        try:
            name, method, args, kwargs = _receive(requests)
        except EOFError:
            return
        try:
            if ":" in method:
                module, _, function = method.partition(":")
                reply = ("ok", getattr(importlib.import_module(module), function)(*args, **kwargs))
            else:
                engine = get_engine(name, "engine")
                if not engine.runs_here():
                    raise RuntimeError(f"engine {name} cannot run in its worker ({_describe(engine.env)})")
                reply = ("ok", getattr(engine, method)(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 -- every failure goes back to the caller, who raises it
            reply = ("error", (type(err).__name__, str(err) or type(err).__name__))
        _send(replies, reply)
        release_memory(above=RSS_LIMIT // 2)


if __name__ == "__main__":
    main()
