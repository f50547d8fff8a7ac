"""Shared by tests/ and parity_tests/.

- Tests call `alexnet`'s main() in their own process. The command keeps every freed large buffer for reuse
  (alexnet_cli/_malloc.py), which in a test worker would hold the peak of every test it ever ran (measured: CI's
  two workers at ~11 GB each, killed by the kernel's OOM killer on a 24 GB machine); the test session runs with
  the system's malloc policy instead.
- Keras runs TensorFlow in the test processes (KERAS_BACKEND below): keras-jax and keras-torch in their workers.
- The engine worker processes (common.workers) of a test module are closed when the module ends, so that the
  two CI workers' Keras backends do not hold their memory for the whole run; after each test, freed memory goes
  back to the system once the process holds over 4 GiB (common.workers.release_memory), and after each module
  JAX's compile caches.
"""
import os
import sys

import pytest

os.environ.setdefault("ALEXNET_MALLOC", "system")
# The test processes' Keras runs TensorFlow, whatever test touches Keras first: the tests that build live Keras
# models or patch Keras layers need it; keras-jax and keras-torch run in their workers (Engine.runs_here).
os.environ["KERAS_BACKEND"] = "tensorflow"


@pytest.fixture(autouse=True)
def _release_memory():
    yield
    from alexnet_parity.common.workers import release_memory
    release_memory(above=4 * 2**30)  # below it, the collection costs more than it saves


@pytest.fixture(autouse=True, scope="module")
def _close_engine_workers():
    yield
    from alexnet_parity.common import workers
    workers.close_all()
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
