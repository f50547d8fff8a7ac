"""The spec's counts and shapes, checked against figures computed here from the published architectures."""
import numpy as np
import pytest

from alexnet_parity.common import VARIANTS, get_spec, smallest_input_size


def conv_params(cin, cout, k, groups=1):
    return cout * (cin // groups) * k * k + cout


def dense_params(fin, fout):
    return fin * fout + fout


# (cin, cout, kernel, groups) of conv1..conv5, written from each source's text, not from the spec.
ARCH = {
    "paper": [(3, 96, 11, 1), (96, 256, 5, 2), (256, 384, 3, 1), (384, 384, 3, 2), (384, 256, 3, 2)],
    "single-column": [(3, 96, 11, 1), (96, 256, 5, 1), (256, 384, 3, 1), (384, 384, 3, 1), (384, 256, 3, 1)],
    "torchvision": [(3, 64, 11, 1), (64, 192, 5, 1), (192, 384, 3, 1), (384, 256, 3, 1), (256, 256, 3, 1)],
    "slim-v2": [(3, 64, 11, 1), (64, 192, 5, 1), (192, 384, 3, 1), (384, 384, 3, 1), (384, 256, 3, 1)],
}
ARCH["caffe"] = ARCH["caffenet"] = ARCH["paper"]
FC6_IN = {"slim-v2": 256 * 5 * 5}


def independent_params(variant):
    convs = sum(conv_params(*layer) for layer in ARCH[variant])
    fc6_in = FC6_IN.get(variant, 256 * 6 * 6)
    return convs + dense_params(fc6_in, 4096) + dense_params(4096, 4096) + dense_params(4096, 1000)


# The figures DESIGN.md gives (from the papers and the frameworks' own summaries).
PUBLISHED_PARAMS = {"paper": 60_965_224, "caffe": 60_965_224, "caffenet": 60_965_224,
                    "single-column": 62_378_344, "torchvision": 61_100_840, "slim-v2": 50_303_912}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_param_count_matches_independent_and_published_count(variant):
    spec = get_spec(variant)
    assert spec.param_count() == independent_params(variant) == PUBLISHED_PARAMS[variant]


def test_mac_counts():
    # conv MACs = out_h*out_w*cout*(cin/groups)*k*k; dense MACs = in*out
    def macs(variant, sizes):
        convs = sum(s * s * cout * (cin // g) * k * k for (cin, cout, k, g), s in zip(ARCH[variant], sizes))
        return convs + 9216 * 4096 + 4096 * 4096 + 4096 * 1000
    assert get_spec("torchvision").mac_count() == macs("torchvision", [55, 27, 13, 13, 13]) == 714_188_480
    assert get_spec("caffe").mac_count() == macs("caffe", [55, 27, 13, 13, 13]) == 724_406_816


def test_neuron_count_is_the_papers_650k():
    expected = 55 * 55 * 96 + 27 * 27 * 256 + 13 * 13 * 384 * 2 + 13 * 13 * 256 + 4096 * 2 + 1000
    assert get_spec("paper").neuron_count() == get_spec("caffe").neuron_count() == expected == 659_272


@pytest.mark.parametrize("size", [224, 227])
def test_paper_conv1_is_55_at_224_and_227(size):
    spec = get_spec("paper", input_size=size)
    assert spec.layer("conv1").out_shape == (96, 55, 55)
    assert spec.layer("pool5").out_shape == (256, 6, 6)


def test_paper_224_pads_conv1_after_only():
    # cuda-convnet: out = 1 + ceil((224 - 11) / 4) = 55, i.e. 3 pixels of zeros after, none before
    assert get_spec("paper").layer("conv1").padding == ((0, 3), (0, 3))
    assert get_spec("paper", input_size=227).layer("conv1").padding == ((0, 0), (0, 0))


@pytest.mark.parametrize("size,pool5", [(224, 6), (256, 7), (320, 9)])
def test_torchvision_adaptive_pool_reaches_6x6(size, pool5):
    spec = get_spec("torchvision", input_size=size)
    assert spec.layer("pool5").out_shape == (256, pool5, pool5)
    assert spec.layer("avgpool").out_shape == (256, 6, 6)
    assert spec.layer("fc6").in_features == 9216


def test_caffe_ceil_pooling_at_256_gives_7x7_where_floor_gives_6x6():
    caffe = get_spec("caffe", input_size=256)
    assert caffe.layer("pool5").out_shape == (256, 7, 7)
    assert caffe.layer("fc6").in_features == 12_544
    assert get_spec("single-column", input_size=256).layer("pool5").out_shape == (256, 6, 6)


def test_slim_v2_shapes():
    spec = get_spec("slim-v2")
    sizes = [layer.out_shape[1] for layer in spec.layers if layer.kind in ("conv", "maxpool")]
    assert sizes == [54, 26, 26, 12, 12, 12, 12, 5]
    # TF SAME for a 5x5 stride-1 conv on 26: 2 before, 2 after
    assert spec.layer("conv2").padding == ((2, 2), (2, 2))


def test_tf_same_padding_is_asymmetric():
    from alexnet_parity.common import resolve_1d
    # in 224, k 3, s 2: out 112, total pad (111*2 + 3 - 224) = 1, all of it after
    assert resolve_1d(224, 3, 2, 0, "same") == (0, 1, 112)


def test_too_small_input_names_the_smallest_size():
    smallest = smallest_input_size("paper")
    with pytest.raises(ValueError, match=f"smallest input size it takes is {smallest}"):
        get_spec("paper", input_size=32)
    get_spec("paper", input_size=smallest)  # works
    with pytest.raises(ValueError):
        get_spec("paper", input_size=smallest - 1)


def test_overrides():
    spec = get_spec("caffe", num_classes=10)
    assert spec.layer("fc8").out_shape == (10,)
    assert spec.param_count() == PUBLISHED_PARAMS["caffe"] - dense_params(4096, 1000) + dense_params(4096, 10)
    top = get_spec("torchvision", include_top=False)
    assert top.layers[-1].name == "avgpool" and "fc6.weight" not in top.weight_shapes()
    with pytest.raises(ValueError, match="unknown variant"):
        get_spec("alexnet-v9")


def test_spec_is_frozen_and_hashable():
    a, b = get_spec("caffe"), get_spec("caffe", input_size=227)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(Exception):
        a.input_size = 3


def test_checkpoint_for_another_size_fails_with_a_message_that_says_so():
    from alexnet_parity.common import init_weights
    w256 = init_weights(get_spec("caffe", input_size=256), seed=0)
    with pytest.raises(ValueError, match=r"fc6\.weight.*made for input size between 231 and 262, not 227"):
        get_spec("caffe").check_weights(w256)


def test_check_weights_names_missing_and_nan_tensors():
    from alexnet_parity.common import init_weights
    spec = get_spec("torchvision", input_size=63)
    w = init_weights(spec, 0)
    broken = dict(w)
    del broken["conv3.bias"]
    with pytest.raises(ValueError, match="conv3.bias"):
        spec.check_weights(broken)
    w["fc7.weight"] = w["fc7.weight"].copy()
    w["fc7.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match="fc7.weight.*NaN"):
        spec.check_weights(w)
