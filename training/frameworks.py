"""The engines training can drive (those with a training adapter in common.engines), by --framework name.
Each adapter lives in its engine's package (torch_impl/adapter.py, ...); see common.engines.Adapter."""
from __future__ import annotations

from alexnet_parity.common import Spec
from alexnet_parity.common.engines import get_engine, trainable
from alexnet_parity.common.optim import PaperSGD


def available(framework: str) -> bool:
    return get_engine(framework, among=trainable()).available()


def check_framework(framework: str) -> str:
    """The name, when it is known and installed; else a ValueError naming --framework."""
    engine = get_engine(framework, "--framework", among=trainable())
    if not engine.available():
        raise ValueError(engine.missing("--framework"))
    return framework


def default_framework() -> str:
    """The first installed engine that trains, in registration order."""
    for name, engine in trainable().items():
        if engine.available():
            return name
    first, *others = [e.extra for e in trainable().values() if e.extra]
    raise ValueError(f"no framework installed: pip install 'alexnet-parity[{first}]'"
                     + (f" (or {', '.join(f'[{x}]' for x in others)})" if others else ""))


def make_adapter(framework: str, spec: Spec, weights: dict, lr: float | None = 0.01, cfg: PaperSGD = PaperSGD()):
    """The framework's model built from canonical `weights`, with the paper's SGD at `lr` (None: no
    optimizer, for inference only)."""
    return trainable()[check_framework(framework)].make_adapter(spec, weights, lr, cfg)


def framework_help() -> str:
    """--framework's help: the choices, from the registry."""
    return f"{', '.join(trainable())} (default: the first installed)"
