"""init_weights follows each variant's rule: statistics per layer, exact bias constants, determinism."""
import math

import numpy as np
import pytest

from common import VARIANTS, get_spec, init_bounds, init_weights, truncated_normal_std


@pytest.fixture(scope="module", params=list(VARIANTS))
def spec_and_weights(request):
    spec = get_spec(request.param)
    return spec, init_weights(spec, seed=1)


def expected_moments(init, fan_in, fan_out):
    if init.kind == "normal":
        return 0.0, init.value
    if init.kind == "truncated_normal":
        return 0.0, truncated_normal_std(init.value)
    if init.kind in ("fan_in_uniform", "glorot_uniform"):
        return 0.0, init_bounds(init, fan_in, fan_out) / math.sqrt(3)
    return init.value, 0.0


def test_statistics_follow_the_rule(spec_and_weights):
    spec, w = spec_and_weights
    for layer in spec.param_layers:
        for part in ("weight", "bias"):
            init = getattr(layer, f"{part}_init")
            a = w[f"{layer.name}.{part}"].astype(np.float64)
            mean, std = expected_moments(init, layer.fan_in, layer.fan_out)
            if init.kind == "constant":
                assert np.all(a == np.float32(init.value)), f"{layer.name}.{part}"
                continue
            n = a.size
            # 6 standard errors: a wrong rule (e.g. std 0.01 vs 0.005, or uniform vs normal bounds) fails
            assert abs(a.mean() - mean) < 6 * std / math.sqrt(n) + 1e-12, f"{layer.name}.{part} mean"
            assert abs(a.std() - std) < max(6 * std / math.sqrt(2 * n), 0.02 * std), f"{layer.name}.{part} std"
            if init.kind == "truncated_normal":
                assert np.abs(a).max() <= 2 * init.value * (1 + 1e-6)
            if init.kind in ("fan_in_uniform", "glorot_uniform"):
                bound = init_bounds(init, layer.fan_in, layer.fan_out)
                assert np.abs(a).max() <= bound * (1 + 1e-6) and np.abs(a).max() > 0.9 * bound


def test_paper_bias_constants():
    w = init_weights(get_spec("paper"), 0)
    for name, value in [("conv1", 0), ("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1), ("fc6", 1),
                        ("fc7", 1), ("fc8", 0)]:
        assert np.all(w[f"{name}.bias"] == value), name
    caffe = init_weights(get_spec("caffe"), 0)
    assert np.all(caffe["conv2.bias"] == np.float32(0.1)) and np.all(caffe["fc8.bias"] == 0)
    assert abs(caffe["fc6.weight"].std() - 0.005) < 1e-4 and abs(caffe["conv1.weight"].std() - 0.01) < 2e-4


def test_same_seed_same_arrays_and_layout():
    spec = get_spec("torchvision")
    a, b, c = init_weights(spec, 3), init_weights(spec, 3), init_weights(spec, 4)
    assert list(a) == list(spec.weight_shapes())
    assert all(a[k].dtype == np.float32 and a[k].shape == spec.weight_shapes()[k] for k in a)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
