"""Every variant (defaults and the overrides whose geometry differs) x every framework x every device:
each named layer within 1e-5 of the float64 reference and of each other framework (a twin engine's overrides:
-m slow, parity_cases)."""
import os

import pytest

from alexnet_parity.common import get_spec

from alexnet_parity.common.engines import compared
from alexnet_parity.parity_tests.core import CONFIGS, TOLERANCE, config_id, failures, run_parity, twin_of


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


def parity_cases():
    """Every config in every engine. A twin (keras-jax, keras-torch: keras's model code on another backend, whose
    own code is the backend's ops) runs on each variant at its own size in CI, and on the configs that change a
    size, the classes or the top (the spec's geometry, which its twin already follows in CI) with -m slow."""
    for variant, overrides in CONFIGS:
        label = config_id(variant, overrides)
        yield pytest.param(variant, overrides, not overrides, id=label)
        if overrides:
            yield pytest.param(variant, overrides, True, id=f"{label}+twins", marks=pytest.mark.slow)


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("variant,overrides,twins", list(parity_cases()))
def test_every_layer_agrees(variant, overrides, twins, device):
    frameworks = tuple(name for name in available() if twins or twin_of(name) is None)
    if not frameworks:
        pytest.skip(f"none of {', '.join(compared())} is installed")
    if device == "gpu":
        frameworks = tuple(name for name in gpu_frameworks() if name in frameworks)
        if not frameworks:
            pytest.skip("no GPU visible to torch, TensorFlow or JAX on this machine")
    result = run_parity(variant, overrides, device=device, frameworks=frameworks)
    assert set(result.vs_reference) == set(frameworks), result.errors
    assert len(result.pairs) == len(frameworks) * (len(frameworks) - 1) // 2
    names = [layer.name for layer in get_spec(variant, **overrides).layers]
    assert result.layers == names and all(list(t) == names for t in result.vs_reference.values())
    bad = failures(result, TOLERANCE)
    assert not bad, f"{result.id} on {device}: " + "; ".join(bad[:10])
