"""The float64 reference, checked op by op against naive loops written from each definition."""
import time

import numpy as np
import pytest

from alexnet_parity.common import LRN, AdaptiveAvgPool, Conv, MaxPool, get_spec, init_weights, reference_forward
from alexnet_parity.common.reference import adaptive_avg_pool, conv, lrn, max_pool

rng = np.random.default_rng(0)


def naive_conv(x, w, b, stride, padding, groups):
    (t, bo), (l, r) = padding
    x = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = x[:, g * cg:(g + 1) * cg, i * stride:i * stride + k, j * stride:j * stride + k]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + b[oc]
    return out


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, ((1, 1), (1, 1))), (2, 2, ((0, 3), (0, 3))),
                                                   (2, 3, ((2, 1), (0, 2)))])
def test_conv_matches_naive_loops(groups, stride, padding):
    x = rng.normal(size=(2, 4, 9, 10))
    w = rng.normal(size=(6, 4 // groups, 3, 3))
    b = rng.normal(size=6)
    layer = Conv("c", out_channels=6, kernel=3, stride=stride, groups=groups, padding=padding)
    np.testing.assert_allclose(conv(x, w, b, layer), naive_conv(x, w, b, stride, padding, groups), rtol=1e-12)


def test_lrn_matches_its_formula():
    x = rng.normal(size=(2, 7, 3, 3))
    for alpha_over_n, k in ((True, 1.0), (False, 2.0)):
        layer = LRN("n", size=5, alpha=1e-2, beta=0.75, k=k, alpha_over_n=alpha_over_n)
        scale = 1e-2 / 5 if alpha_over_n else 1e-2
        expected = np.empty_like(x)
        for c in range(7):
            s = sum(x[:, j] ** 2 for j in range(max(0, c - 2), min(7, c + 3)))
            expected[:, c] = x[:, c] / (k + scale * s) ** 0.75
        np.testing.assert_allclose(lrn(x, layer), expected, rtol=1e-12)


def test_max_pool_ceil_windows_see_only_real_pixels():
    x = -np.abs(rng.normal(size=(1, 2, 6, 6))) - 1  # all negative: a zero pad would win
    layer = MaxPool("p", kernel=3, stride=2, padding=((0, 1), (0, 1)))  # ceil: 6 -> 3
    out = max_pool(x, layer)
    assert out.shape == (1, 2, 3, 3)
    assert out[0, 0, 2, 2] == x[0, 0, 4:6, 4:6].max()  # the last window holds 2x2 real pixels


@pytest.mark.parametrize("size", [6, 7, 9, 13])
def test_adaptive_pool_matches_pytorch_bins(size):
    x = rng.normal(size=(1, 3, size, size))
    out = adaptive_avg_pool(x, AdaptiveAvgPool("a", output_size=6))
    for i in range(6):
        for j in range(6):
            h0, h1 = (i * size) // 6, -(-((i + 1) * size) // 6)
            w0, w1 = (j * size) // 6, -(-((j + 1) * size) // 6)
            np.testing.assert_allclose(out[0, :, i, j], x[0, :, h0:h1, w0:w1].mean(axis=(1, 2)), rtol=1e-12)


def test_reference_forward_returns_every_layer_and_is_fast_enough():
    spec = get_spec("caffe")
    w = init_weights(spec, 0)
    x = rng.normal(size=(2, 3, 227, 227))
    start = time.perf_counter()
    acts = reference_forward(spec, w, x)
    elapsed = time.perf_counter() - start
    assert list(acts) == [layer.name for layer in spec.layers]
    assert all(acts[layer.name].shape[1:] == layer.out_shape for layer in spec.layers)
    assert all(a.dtype == np.float64 for a in acts.values())
    assert elapsed < 30  # "seconds", with a wide margin for a shared machine


def test_reference_rejects_a_wrong_input_shape():
    spec = get_spec("torchvision")
    with pytest.raises(ValueError, match=r"takes \(N, 3, 224, 224\) NCHW"):
        reference_forward(spec, init_weights(spec, 0), np.zeros((1, 224, 224, 3)))


def test_lrn_rule_changes_the_output():
    """The paper's alpha and PyTorch's alpha/n are different functions: the reference must tell them apart."""
    spec = get_spec("single-column", input_size=67)
    w = init_weights(spec, 0)
    x = rng.normal(size=(1, 3, 67, 67)) * 50
    paper_rule = spec.replace_layers("lrn", alpha_over_n=False)
    a, b = reference_forward(spec, w, x)["norm1"], reference_forward(paper_rule, w, x)["norm1"]
    assert np.abs(a - b).max() / np.abs(a).max() > 1e-4
