"""Every variant (defaults and the overrides whose geometry differs) x every framework x every device:
each named layer within 1e-5 of the float64 reference and of each other framework."""
import os

import pytest

from alexnet_parity.common import get_spec

from alexnet_parity.common.engines import compared
from alexnet_parity.parity_tests.core import CONFIGS, TOLERANCE, config_id, failures, run_parity


def available() -> tuple[str, ...]:
    """The installed engines of the registry, the reference aside (every one is measured against it)."""
    return tuple(name for name, engine in compared().items() if engine.available())


def gpu_frameworks() -> tuple[str, ...]:
    return tuple(name for name in available() if "gpu" in compared()[name].devices())


def test_every_framework_is_installed_in_ci():
    """CI installs every engine; a missing one there must fail, not quietly shrink the suite."""
    if os.environ.get("CI") != "true":
        pytest.skip("only enforced in CI (CI=true)")
    assert available() == tuple(compared())


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("variant,overrides", CONFIGS, ids=[config_id(*c) for c in CONFIGS])
def test_every_layer_agrees(variant, overrides, device):
    frameworks = available()
    if not frameworks:
        pytest.skip(f"none of {', '.join(compared())} is installed")
    if device == "gpu":
        frameworks = gpu_frameworks()
        if not frameworks:
            pytest.skip("no GPU visible to torch, TensorFlow or JAX on this machine")
    result = run_parity(variant, overrides, device=device, frameworks=frameworks)
    assert set(result.vs_reference) == set(frameworks), result.errors
    assert len(result.pairs) == len(frameworks) * (len(frameworks) - 1) // 2
    names = [layer.name for layer in get_spec(variant, **overrides).layers]
    assert result.layers == names and all(list(t) == names for t in result.vs_reference.values())
    bad = failures(result, TOLERANCE)
    assert not bad, f"{result.id} on {device}: " + "; ".join(bad[:10])
