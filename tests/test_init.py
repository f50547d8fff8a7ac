"""init_weights: exact bias constants, the rule's std on large layers, determinism."""
import numpy as np

from alexnet_parity.common import get_spec, init_weights


# per-layer statistics of init_weights: parity_tests/test_native_init.py (one checker for numpy and each framework)


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
