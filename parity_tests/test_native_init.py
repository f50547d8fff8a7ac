"""Each engine's native init (its own RNG) follows the variant's rule, as numpy's init_weights does."""
import numpy as np
import pytest

from alexnet_parity.common import VARIANTS, get_spec, init_weights, smallest_input_size
from alexnet_parity.common.engines import compared
from alexnet_parity.parity_tests.core import twin_of
from alexnet_parity.parity_tests.init_check import init_problems, spec_init_problems


def init_spec(variant):
    # the rules do not depend on the input size; a small one keeps fc6 (and the test) small
    return get_spec(variant, input_size=smallest_input_size(variant) + 16)


def init_cases():
    """Every engine x every variant; a twin (keras-jax, keras-torch: keras's initializers drawn by another
    backend's RNG) on the paper net in CI and on the rest with -m slow."""
    for framework in compared():
        for variant in VARIANTS:
            slow = twin_of(framework) is not None and variant != "paper"
            yield pytest.param(framework, variant, id=f"{framework}-{variant}", marks=(pytest.mark.slow,) if slow else ())


@pytest.mark.parametrize("framework,variant", list(init_cases()))
def test_native_init_follows_the_rule(framework, variant):
    engine = compared()[framework]
    if not engine.available():
        pytest.skip(f"{framework} is not installed")
    spec = init_spec(variant)
    weights = engine.built_weights(spec, seed=0)
    assert {k: v.shape for k, v in weights.items()} == spec.weight_shapes()
    assert not spec_init_problems(spec, weights)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_numpy_init_weights_follow_the_rule(variant):
    spec = get_spec(variant)
    assert not spec_init_problems(spec, init_weights(spec, seed=1))


def test_the_checker_catches_a_wrong_rule():
    rng = np.random.default_rng(0)
    from alexnet_parity.common import Init
    assert init_problems(rng.normal(0, 0.01, 100_000), Init("normal", 0.005), 1, 1)
    assert init_problems(rng.normal(0, 0.005, 100_000), Init("truncated_normal", 0.005), 1, 1)
    assert init_problems(np.clip(rng.normal(0, 0.01, 100_000), -0.02, 0.02), Init("normal", 0.01), 1, 1)
    assert init_problems(rng.uniform(-0.1, 0.1, 10_000), Init("fan_in_uniform"), 400, 1)  # bound 0.05
    assert init_problems(np.full(10, 0.1, np.float32), Init("constant", 1.0), 1, 1)
    assert not init_problems(rng.uniform(-0.05, 0.05, 10_000), Init("fan_in_uniform"), 400, 1)
