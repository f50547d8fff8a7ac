"""Every engine AlexNet runs on, by the name users type, in one registry.

An engine is a record (`Engine`) defined in the engine's own package (`torch_impl/engine.py`, ...) and
registered here, by the one tuple `ENGINE_MODULES` or by `register()` (a test's toy, a plugin). The CLI, the
parity harness, training and the tests iterate over `engines()`; none of them names an engine.

Reading the registry imports no framework: each record is plain data whose code is named by module path, and
`available()` asks importlib.util.find_spec, which only looks. The framework is imported when an engine's
model, adapter or bench runner is first asked for.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from functools import wraps
from types import ModuleType
from typing import Any

# The one place engines are named: each module defines ENGINE, an Engine (or ENGINES, a tuple of them). The reference goes last, so that
# tables list the frameworks first and the oracle after them.
ENGINE_MODULES = ("alexnet_parity.torch_impl.engine", "alexnet_parity.tf_impl.engine",
                  "alexnet_parity.jax_impl.engine", "alexnet_parity.onnx_impl.engine",
                  "alexnet_parity.common.reference_engine")


@dataclass(frozen=True)
class BenchPath:
    """One way `alexnet bench` runs an engine's model (eager, a compiled graph, ...)."""
    name: str
    help: str
    color: str  # its bars in the bench plot
    modes: tuple[str, ...] = ("infer", "train")  # what it can time: --mode infer (forward), train (+ backward)


def _where_it_runs(method=None, *, setting: bool = False):
    """A numpy-in, numpy-out Engine method that runs in this process where it can, else in the engine's worker
    process (common.workers), which calls the same method there. A `setting` (set_threads) configures that
    process: a worker that replaces it (closed for its memory, or dead) gets the same call first."""
    def decorate(method):
        @wraps(method)
        def dispatch(self, *args, **kwargs):
            if self.runs_here():
                return method(self, *args, **kwargs)
            from . import workers
            return (workers.configure if setting else workers.call)(self, method.__name__, *args, **kwargs)
        return dispatch
    return decorate(method) if method else decorate


@dataclass(frozen=True, eq=False)
class Engine:
    """What the project knows about one engine. `package`, `adapter`, `runner` and `train` are import paths
    ("module" or "module:attribute"), or for a toy engine the objects themselves."""
    name: str  # as users type it: alexnet parity --frameworks NAME, alexnet train --framework NAME
    package: Any  # the module with build_model, export_weights, load_weights, run_activations, devices
    requires: tuple[str, ...] = ()  # the modules it imports; all must be installed
    extra: str | None = None  # pip install 'alexnet-parity[EXTRA]' installs them
    formats: tuple[str, ...] = ()  # its native weight formats; `parity --convert` writes the first
    suffix: str = ""  # the file ending of formats[0] that `parity --convert` writes
    layout: str = "NCHW"  # of its inputs and feature maps: NCHW or NHWC
    dtypes: tuple[str, ...] = ("float32",)  # what build_model(dtype=...) takes on CPU
    color: str = "tab:gray"  # its lines in the parity plot
    bench_paths: tuple[BenchPath, ...] = ()
    runner: Any = None  # the bench runner class: Runner(device, tf32)
    adapter: Any = None  # the training adapter class: Adapter(spec, weights, lr, cfg)
    train: Any = None  # the module with make_optimizer, train_step, gradients, optimizer_state, ...
    imports: tuple[str, ...] = ()  # top-level modules it brings in beyond `requires` (what a cold start checks)
    env: dict = field(default_factory=dict)  # environment its process needs (KERAS_BACKEND: see runs_here)
    threads: Any = None  # "module:function" set_threads(n) -> the count it reports; call before it computes
    oracle: bool = False  # the float64 reference every other engine is measured against
    autodiff: bool = False  # its package has run_gradients: the gradient parity suite measures it

    # --- data: no import ------------------------------------------------------------------------------
    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def missing(self, option: str = "--framework") -> str:
        """The line that says what to install for it."""
        install = f": pip install 'alexnet-parity[{self.extra}]'" if self.extra else ""
        return f"{option} {self.name} needs {' and '.join(self.requires)}{install}"

    @property
    def modules(self) -> tuple[str, ...]:
        return (*self.requires, *self.imports)

    def runs_here(self) -> bool:
        """Whether this process can run it. Keras reads KERAS_BACKEND once, at import: an engine that needs
        another backend than the one this process's Keras runs must run in a worker process (common.workers),
        which its numpy-in, numpy-out methods do by themselves. The process's backend is the one its Keras was
        imported with, else the one KERAS_BACKEND names; a process that names none goes to the first Keras engine
        that computes. (Without the second rule, whichever Keras engine a test touched first claimed the test
        process, and the tests that patch live Keras layers failed in some orders of the suite.)"""
        backend = self.env.get("KERAS_BACKEND")
        if backend is None:
            return True
        if "keras" in sys.modules:
            return sys.modules["keras"].backend.backend() == backend
        return os.environ.get("KERAS_BACKEND", backend) == backend

    # --- code: imports the framework --------------------------------------------------------------------
    def impl(self) -> ModuleType:
        """Its package, imported here: the first engine to import Keras sets the backend it runs."""
        if not self.runs_here():
            raise RuntimeError(f"engine {self.name} needs Keras's {self.env['KERAS_BACKEND']} backend, but this "
                               f"process's Keras runs {sys.modules['keras'].backend.backend()} (Keras reads "
                               f"KERAS_BACKEND once per process): run it in a process of its own")
        if "keras" not in sys.modules:
            os.environ.update(self.env)
        return _resolve(self.package)

    def build_model(self, spec, weights=None, **options):
        return self.impl().build_model(spec, weights, **options)

    @_where_it_runs
    def built_weights(self, spec, weights=None, **options) -> dict:
        """export_weights(build_model(spec, weights, **options)), run where the engine runs (a worker process if
        need be): the weights its own init draws (weights=None, seed=...), or what it keeps of given ones."""
        return self.export_weights(self.build_model(spec, weights, **options))

    def export_weights(self, model) -> dict:
        return self.impl().export_weights(model)

    def load_weights(self, model, weights: dict) -> None:
        self.impl().load_weights(model, weights)

    @_where_it_runs
    def run_activations(self, spec, weights: dict, x_nchw, device: str = "cpu", dtype: str = "float32") -> dict:
        """Every named layer's output for a NCHW float32 batch, as numpy in the canonical (NCHW) layout, from a
        model of `dtype` (float64 activations as float64, the others as float32). An engine that takes only
        float32 is not passed the option."""
        if dtype not in self.dtypes:
            raise ValueError(f"dtype {dtype!r}: {self.name} builds {', '.join(self.dtypes)} on CPU")
        options = {} if dtype == "float32" else {"dtype": dtype}
        return self.impl().run_activations(spec, weights, x_nchw, device=device, **options)

    @_where_it_runs
    def run_gradients(self, spec, weights: dict, x_nchw, cotangent, device: str = "cpu",
                      dtype: str = "float32") -> dict:
        """{"gradients": dL/d input, every named layer's output and every weight; "activations": the forward},
        L = sum(cotangent * output), as numpy in the canonical layout."""
        if not self.autodiff:
            raise ValueError(f"{self.name} has no automatic differentiation")
        return self.impl().run_gradients(spec, weights, x_nchw, cotangent, device=device, dtype=dtype)

    @_where_it_runs
    def devices(self) -> list[str]:
        return self.impl().devices()

    @_where_it_runs(setting=True)
    def set_threads(self, n: int):
        """Run its CPU work on n threads, by the framework's own settings: call it in a fresh process before the
        engine first computes (most frameworks fix their pools then). Returns the count the framework reports
        (None where it reports none); a ValueError where the engine has no thread setting."""
        if self.threads is None:
            raise ValueError(f"engine {self.name} has no thread setting (its record's threads=)")
        self.impl()  # claims the process's environment before the framework is imported
        return _resolve(self.threads)(n)

    def train_module(self) -> ModuleType:
        self.impl()  # claims the process's environment
        return _resolve(self.train)

    def make_adapter(self, spec, weights: dict, lr, cfg):
        self.impl()
        adapter = _resolve(self.adapter)(spec, weights, lr, cfg)
        adapter.framework = self.name
        return adapter

    def make_runner(self, device: str = "cpu", tf32: str | None = None):
        self.impl()
        return _resolve(self.runner)(device, tf32)


def _resolve(target):
    """A module or attribute named "package.module" / "package.module:attribute"; an object as it is."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    found = importlib.import_module(module)
    return getattr(found, attribute) if attribute else found


_registry: dict[str, Engine] = {}
_loaded = False


def _load() -> dict[str, Engine]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in ENGINE_MODULES:
            found = importlib.import_module(module)
            for engine in getattr(found, "ENGINES", None) or (found.ENGINE,):
                register(engine)
    return _registry


def register(engine: Engine) -> Engine:
    """Add an engine; every consumer sees it from then on. A name can be registered once."""
    registry = _load()
    if engine.name in registry:
        raise ValueError(f"an engine named {engine.name!r} is already registered")
    registry[engine.name] = engine
    return engine


def unregister(name: str) -> None:
    _load().pop(name, None)


def engines() -> dict[str, Engine]:
    """Every registered engine, name -> record, in registration order."""
    return dict(_load())


def compared() -> dict[str, Engine]:
    """The engines measured against the reference (all but the oracle)."""
    return {n: e for n, e in _load().items() if not e.oracle}


def reference() -> Engine:
    return next(e for e in _load().values() if e.oracle)


def get_engine(name: str, option: str = "--framework", among: dict[str, Engine] | None = None) -> Engine:
    """The engine of a name, else a ValueError naming the option and the choices."""
    among = _load() if among is None else among
    if name not in among:
        raise ValueError(f"unknown {option} {name!r}; choose one of: {', '.join(among)}")
    return among[name]


def engine_for_format(fmt: str) -> Engine:
    """The engine whose native formats include `fmt` (the first registered), else the reference."""
    return next((e for e in _load().values() if fmt in e.formats), None) or reference()


def differentiable() -> dict[str, Engine]:
    """The engines whose gradients the parity suite measures (autodiff): all compared ones that have it."""
    return {n: e for n, e in _load().items() if e.autodiff and not e.oracle}


def trainable() -> dict[str, Engine]:
    """The engines that have a training adapter."""
    return {n: e for n, e in _load().items() if e.adapter is not None}


def benchable() -> dict[str, Engine]:
    """The engines that have a bench runner."""
    return {n: e for n, e in _load().items() if e.runner is not None and e.bench_paths}


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]):
    """(__getattr__, __dir__) for an engine package's __init__ (PEP 562): `from package import build_model`
    imports the submodule that defines it on first use, so that importing the package (as the registry's
    `package.engine` does) imports no framework. exports: submodule -> the names it gives."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(importlib.import_module(package), name, value)  # once: later look-ups skip this function
        return value

    def __dir__():
        return sorted(set(where) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__


class Adapter:
    """What training.loop drives, the same for every engine: numpy in and out (x float32 NCHW as
    training.Batches makes it, NHWC engines transposing on the way in; labels int64; canonical weight and
    velocity dicts). A subclass, in its engine's package, sets impl (the engine's package), train (its train
    module), model and opt (None for inference), and gives train_step(x, y, dropout_seed) and logits(x).

    Dropout is seeded per step: the masks of a step are a function of the run's seed, epoch and step, so a
    resumed run draws the same masks as an uninterrupted one."""

    def weights(self) -> dict:
        return self.impl.export_weights(self.model)

    def velocity(self) -> dict:
        return self.train.optimizer_state(self.opt)

    def load_velocity(self, state: dict) -> None:
        self.train.load_optimizer_state(self.opt, self.model, state)

    def set_lr(self, lr: float) -> None:
        self.train.set_lr(self.opt, lr)

    def get_lr(self) -> float:
        return self.train.get_lr(self.opt)
