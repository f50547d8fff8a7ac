"""The NCHW <-> NHWC helpers: exact inverses, the fc6 permutation an NHWC flatten needs, contiguous copies."""
import numpy as np

from alexnet_parity.common import (activation_to_nchw, conv_hwio_to_oihw, conv_oihw_to_hwio,
                                   fc_rows_chw_to_hwc, fc_rows_hwc_to_chw, get_spec)

rng = np.random.default_rng(0)


def test_fc6_permutation_matches_an_nhwc_flatten():
    chw = (4, 3, 5)
    w = rng.normal(size=(7, 4 * 3 * 5)).astype(np.float32)
    x = rng.normal(size=(2, *chw))
    kernel = fc_rows_chw_to_hwc(w, chw)
    np.testing.assert_allclose(x.transpose(0, 2, 3, 1).reshape(2, -1) @ kernel, x.reshape(2, -1) @ w.T, rtol=1e-6)
    assert np.array_equal(fc_rows_hwc_to_chw(kernel, chw), w)
    # the naive port (W.T without the permutation) is a different function
    assert not np.allclose(x.transpose(0, 2, 3, 1).reshape(2, -1) @ w.T, x.reshape(2, -1) @ w.T)


def test_every_helper_returns_contiguous_arrays():
    w = rng.normal(size=(8, 12)).astype(np.float32)
    k = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    for a in (fc_rows_chw_to_hwc(w, (3, 2, 2)), fc_rows_hwc_to_chw(w.T.copy(), (3, 2, 2)), conv_hwio_to_oihw(k),
              conv_oihw_to_hwio(conv_hwio_to_oihw(k))):
        assert a.flags["C_CONTIGUOUS"]
    assert np.array_equal(conv_oihw_to_hwio(conv_hwio_to_oihw(k)), k)


def test_activation_to_nchw_reorders_everything_between_flatten_and_fc6():
    spec = get_spec("torchvision", input_size=63)  # flatten, drop6 (still H,W,C in NHWC), fc6
    c, h, w = spec.layer("flatten").in_shape
    nchw = rng.normal(size=(2, c, h, w))
    nhwc_flat = nchw.transpose(0, 2, 3, 1).reshape(2, -1)
    for name in ("flatten", "drop6"):
        assert np.array_equal(activation_to_nchw(spec, name, nhwc_flat), nchw.reshape(2, -1))
    fc6 = rng.normal(size=(2, 4096))
    assert np.array_equal(activation_to_nchw(spec, "fc6", fc6), fc6)


def test_nhwc_table_round_trips_and_matches_an_nhwc_forward():
    from alexnet_parity.common import canonical_shape, from_nhwc, to_nhwc

    spec = get_spec("caffe", input_size=71, num_classes=3)  # grouped convs; pool5 is 2x2, so fc6's rows permute
    w = {k: rng.normal(size=shape).astype(np.float32) for k, shape in spec.weight_shapes().items()}
    params = to_nhwc(spec, w)
    assert list(params) == [layer.name for layer in spec.param_layers]
    for layer in spec.param_layers:
        kernel, bias = params[layer.name]
        assert kernel.flags["C_CONTIGUOUS"] and kernel.dtype == np.float32
        assert canonical_shape(kernel.shape) == w[f"{layer.name}.weight"].shape
        assert np.array_equal(bias, w[f"{layer.name}.bias"])
    assert params["conv2"][0].shape == (5, 5, 48, 256) and params["fc7"][0].shape == (4096, 4096)
    back = from_nhwc(spec, params)
    assert set(back) == set(w) and all(np.array_equal(back[k], w[k]) and back[k].dtype == np.float32 for k in w)
    # fc6's rows are those an NHWC flatten of pool5 needs, not just the transpose
    c, h, wd = spec.layer("flatten").in_shape
    assert h > 1 and wd > 1
    x = rng.normal(size=(2, c, h, wd))
    np.testing.assert_allclose(x.transpose(0, 2, 3, 1).reshape(2, -1) @ params["fc6"][0],
                               x.reshape(2, -1) @ w["fc6.weight"].T, rtol=1e-5, atol=1e-4)
