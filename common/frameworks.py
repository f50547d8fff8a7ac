"""The three frameworks by the names users type: the package that builds each, what it needs, its pip extra.
Finding out whether one is installed imports nothing: importlib.util.find_spec only looks."""
from __future__ import annotations

import importlib
import importlib.util
from typing import NamedTuple


class Framework(NamedTuple):
    impl: str  # the package of this project that builds the model
    requires: tuple[str, ...]  # the modules it imports
    extra: str  # pip install 'alexnet-parity[EXTRA]'


FRAMEWORKS = {"torch": Framework("alexnet_parity.torch_impl", ("torch",), "torch"),
              "keras": Framework("alexnet_parity.tf_impl", ("tensorflow", "keras"), "tf"),
              "flax": Framework("alexnet_parity.jax_impl", ("jax", "flax"), "jax")}


def framework_available(name: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in FRAMEWORKS[name].requires)


def load_impl(name: str):
    """The impl package (torch_impl, tf_impl or jax_impl) of a framework name."""
    return importlib.import_module(FRAMEWORKS[name].impl)
