"""weights_convert round trips: every variant through every container it can hold is bit-identical, every
ordered pair of formats is too, and so is the chain torch -> keras -> flax -> caffe/slim -> canonical -> torch.

Most tests use the variants without their classifier (2.3-3.2 M parameters), because fc6-fc8 are the same
4096-wide dense layers in every variant; the classifier (and fc6's row permutation in the NHWC formats) is
covered by a small-input spec whose pool5 is 2x2, so a flatten-order mistake cannot pass.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.common import VARIANTS, get_spec

from _convert_util import CONTAINERS, container_id, frameworks_present, same_weights

# every variant headless; the classifier on slim-v2 (which every format holds) at the smallest input whose
# pool5 is 2x2, so fc6's row order matters
HEADLESS = {v: get_spec(v, include_top=False) for v in VARIANTS}
TOPPED = get_spec("slim-v2", input_size=99, num_classes=7)


@functools.lru_cache(maxsize=8)
def _cached_weights(spec, seed):
    rng = np.random.default_rng(seed)  # every tensor distinct and varied (init rules give constant biases)
    return {k: rng.standard_normal(shape, dtype=np.float32) * 0.1 for k, shape in spec.weight_shapes().items()}


def _weights(spec, seed=0):
    return {k: v.copy() for k, v in _cached_weights(spec, seed).items()}


def _path(tmp_path, container, stem="w"):
    return str(tmp_path / f"{stem}{container[1]}")


def _roundtrip(tmp_path, spec, weights, container, stem="w"):
    fmt, _, options = container
    path = _path(tmp_path, container, stem)
    wc.save(path, spec, weights, fmt=fmt, **options)
    return wc.load(path, fmt=fmt, variant=spec.variant, input_size=spec.input_size)


def _available(container, variant):
    fmt = container[0]
    return frameworks_present(fmt) and wc.can_hold(fmt, variant)


CASES = [(v, c) for v in VARIANTS for c in CONTAINERS if wc.can_hold(c[0], v)]


@pytest.mark.parametrize("variant,container", CASES, ids=[f"{v}-{container_id(c)}" for v, c in CASES])
def test_every_variant_round_trips_bit_identical(tmp_path, variant, container):
    if not frameworks_present(container[0]):
        pytest.skip(f"{container[0]} needs a framework that is not installed")
    spec = HEADLESS[variant]
    w = _weights(spec)
    spec2, w2 = _roundtrip(tmp_path, spec, w, container)
    assert spec2 == spec
    assert same_weights(w, w2)


# the containers whose classifier layout is not the canonical one (the others share code with a sibling here,
# and carry a classifier in test_convert_layouts)
CLASSIFIER_LAYOUTS = [c for c in CONTAINERS if container_id(c) in
                      ("torchvision.pth", "keras.weights.h5", "flax.msgpack", "caffe.v1.caffemodel", "slim.ckpt")]


@pytest.mark.parametrize("container", CLASSIFIER_LAYOUTS, ids=container_id)
def test_classifier_round_trips_bit_identical(tmp_path, container):
    if not _available(container, TOPPED.variant):
        pytest.skip(f"{container[0]} framework is missing")
    spec = TOPPED
    w = _weights(spec, seed=3)
    spec2, w2 = _roundtrip(tmp_path, spec, w, container)
    assert spec2 == spec
    assert same_weights(w, w2)


def test_formats_that_record_the_spec_need_no_variant(tmp_path):
    """canonical, .keras, .weights.h5 and Orbax record the spec; caffe records the layer order and input size;
    the rest say nothing about caffe vs caffenet vs paper, and must say so. Headless at input 71: only a
    recorded spec can bring the input size back."""
    spec = get_spec("caffenet", input_size=71, include_top=False)
    w = _weights(spec)
    recording = [c for c in CONTAINERS if c[0] in ("canonical", "keras", "flax", "caffe") and c[1] != ".msgpack"]
    for container in recording:
        if not frameworks_present(container[0]):
            continue
        path = _path(tmp_path, container)
        wc.save(path, spec, w, fmt=container[0], **container[2])
        spec2, w2 = wc.load(path)
        assert spec2 == spec, container
        assert same_weights(w, w2)
    for container in [c for c in CONTAINERS if c[0] in ("torch", "torchvision") or c[1] == ".msgpack"]:
        if not frameworks_present(container[0]):
            continue
        path = _path(tmp_path, container)
        wc.save(path, spec, w, fmt=container[0])
        with pytest.raises(ValueError, match=r"fit paper, caffe, caffenet.*--variant"):
            wc.load(path, fmt=container[0])


def test_every_ordered_pair_of_formats(tmp_path):
    """A -> B for every ordered pair (A != B), on slim-v2, which every format holds: write A, read it from
    disk, write B, read B from disk; bit-identical and the same spec at the end."""
    spec = HEADLESS["slim-v2"]
    w = _weights(spec, seed=5)
    # one container per format (keras/flax's other containers have their own tests above and in the chain)
    pick = {"canonical": ".safetensors", "torch": ".pt", "torchvision": ".pth", "keras": ".weights.h5",
            "flax": ".msgpack", "caffe": ".caffemodel", "slim": ".ckpt"}
    formats = [c for c in CONTAINERS if pick.get(c[0]) == c[1] and frameworks_present(c[0])]
    sources = {}
    for c in formats:
        path = _path(tmp_path, c, "src")
        wc.save(path, spec, w, fmt=c[0], **c[2])
        sources[c[0]] = path
    pairs = 0
    for a in formats:
        spec_a, w_a = wc.load(sources[a[0]], fmt=a[0], input_size=spec.input_size)
        for b in formats:
            if a is b:
                continue
            dst = _path(tmp_path, b, f"{a[0]}-to")
            wc.save(dst, spec_a, w_a, fmt=b[0], **b[2])
            spec_b, w_b = wc.load(dst, fmt=b[0], input_size=spec.input_size)
            assert spec_b == spec, (a[0], b[0])
            assert same_weights(w, w_b), (a[0], b[0])
            pairs += 1
    assert pairs == len(formats) * (len(formats) - 1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chain_torch_keras_flax_caffe_or_slim_canonical_torch(tmp_path, variant):
    """Each file is read from disk by the next step; containers alternate so all of them are in a chain."""
    for fmt in ("torch", "keras", "flax"):
        if not frameworks_present(fmt):
            pytest.skip(f"{fmt} framework not installed")
    spec = HEADLESS[variant]
    w = _weights(spec, seed=7)
    odd = list(VARIANTS).index(variant) % 2
    chain = [("torch", ".pt", {}),
             ("keras", ".keras" if odd else ".weights.h5", {}),
             ("flax", ".orbax" if odd else ".msgpack", {}),
             ("slim", ".ckpt", {}) if variant == "slim-v2" else
             ("caffe", ".caffemodel", {"container": "layers" if odd else "layer"}),
             ("canonical", ".safetensors", {}),
             ("torch", ".pt", {})]
    current_spec, current = spec, w
    for step, (fmt, ext, options) in enumerate(chain):
        path = str(tmp_path / f"step{step}{ext}")
        wc.save(path, current_spec, current, fmt=fmt, **options)
        current_spec, current = wc.load(path, fmt=fmt, variant=variant, input_size=spec.input_size)
        assert current_spec == spec, f"step {step} ({fmt})"
        assert same_weights(w, current), f"step {step} ({fmt})"


def test_guess_format_from_names(tmp_path):
    assert wc.guess_format("a.safetensors") == "canonical"
    assert wc.guess_format("a.pth") == "torch" and wc.guess_format("a.pt") == "torch"
    assert wc.guess_format("a.weights.h5") == "keras" and wc.guess_format("a.keras") == "keras"
    assert wc.guess_format("a.msgpack") == "flax" and wc.guess_format("a.orbax", reading=False) == "flax"
    assert wc.guess_format("bvlc_alexnet.caffemodel") == "caffe"
    assert wc.guess_format("model.ckpt-100000") == "slim"
    with pytest.raises(ValueError, match="cannot tell the format.*--from"):
        wc.guess_format(str(tmp_path / "weights.bin"))
    assert wc.guess_format("bvlc_alexnet.onnx") == "onnx"
    with pytest.raises(ValueError, match="unknown format 'tflite'"):
        wc.get_format("tflite")


def test_pth_is_read_as_torch_or_torchvision_by_its_keys(tmp_path):
    spec = HEADLESS["torchvision"]
    w = _weights(spec)
    for fmt in ("torch", "torchvision"):
        path = str(tmp_path / f"{fmt}.pth")
        wc.save(path, spec, w, fmt=fmt)
        spec2, w2, read_as = wc.load_as(path)
        assert read_as == fmt and spec2 == spec and same_weights(w, w2)
    with pytest.raises(ValueError, match="torchvision's naming.*--from torchvision"):
        wc.load(str(tmp_path / "torchvision.pth"), fmt="torch")


def test_input_size_is_inferred_from_fc6_and_overridable(tmp_path):
    spec = get_spec("single-column", input_size=131, num_classes=5)  # pool5 3x3
    w = _weights(spec)
    path = str(tmp_path / "w.pt")
    wc.save(path, spec, w)
    inferred, _ = wc.load(path)
    assert inferred.layer("fc6").in_features == 256 * 9 and inferred.num_classes == 5
    assert inferred.input_size == 131  # the smallest size with a 3x3 pool5
    spec2, _ = wc.load(path, input_size=150)
    assert spec2.input_size == 150 and spec2.layer("fc6").in_features == 256 * 9
    with pytest.raises(ValueError, match="fc6.weight"):
        wc.load(path, input_size=227)

