"""Real third-party layouts, made without weights_convert's writers, converted and run in every framework:
the model built from the converted file must compute what the source model computes (1e-5 relative).

- torchvision: its own module layout (features/avgpool/classifier), as alexnet-owt-7be5be79.pth, also
  wrapped ({"state_dict": ...}, {"model": ...}) and with DataParallel's "module." prefix (full size, 61 M);
- the one-column re-implementation with `net.N` keys and LRN;
- Caffe: caffemodels encoded by Google's protobuf from caffe.proto's field numbers, in the V1 `layers`
  container with legacy 4-D blob dims (as bvlc_alexnet.caffemodel) and in the `layer` container, with and
  without a deploy .prototxt; our writer's files are parsed back by protobuf;
- TF-slim: variables created under alexnet_v2/ by a TF1 graph and saved by tf.compat.v1 Saver, with a
  global_step and Momentum slots, run by TF's own conv2d with slim's SAME/VALID paddings.
"""
from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.common import get_spec, reference_forward
from alexnet_parity.common.engines import get_engine
from alexnet_parity.parity_tests.core import parity_input, parity_weights, rel_err

from _convert_util import (bvlc_deploy_prototxt, bvlc_net_bytes, caffe_messages, one_column_alexnet,
                           same_weights, slim_checkpoint, slim_forward, torchvision_alexnet)

TOL = 1e-5
TARGETS = [("torch", ".pt", "torch"), ("keras", ".weights.h5", "keras"), ("flax", ".msgpack", "flax"),
           ("keras", ".keras", "keras"), ("flax", ".orbax", "flax")]


def _impl(framework):
    try:
        return get_engine(framework).impl()
    except ImportError:
        pytest.skip(f"{framework} is not installed")


def _check_targets(tmp_path, spec, weights, x, expected, targets=TARGETS, stem="out"):
    """Convert `weights` into each target format, read the file back, build that framework's model from it
    and compare its output (the last layer) with `expected`."""
    for fmt, ext, impl_name in targets:
        impl = _impl(impl_name)
        path = str(tmp_path / f"{stem}{ext}")
        wc.save(path, spec, weights, fmt=fmt)
        spec2, w2 = wc.load(path, fmt=fmt, variant=spec.variant, input_size=spec.input_size)
        assert spec2 == spec and same_weights(weights, w2), fmt
        out = impl.run_activations(spec2, w2, x)[spec.layers[-1].name]
        err = rel_err(out, expected, expected)
        assert err < TOL, f"{fmt}{ext} via {impl_name}: relative error {err:.2e}"


# --- torchvision ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torchvision_alexnet().eval()
    path = tmp_path_factory.mktemp("tv") / "alexnet-owt-7be5be79.pth"
    torch.save(module.state_dict(), path)
    return module, str(path)


def test_torchvision_checkpoint_loads_as_torchvision(torchvision_file):
    module, path = torchvision_file
    spec, weights = wc.load(path)
    assert spec == get_spec("torchvision")
    table = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
             "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8"}
    state = module.state_dict()
    for key, name in table.items():
        for kind in ("weight", "bias"):
            assert np.array_equal(weights[f"{name}.{kind}"], state[f"{key}.{kind}"].numpy())


def test_torchvision_wrapped_and_dataparallel_checkpoints(torchvision_file, tmp_path):
    import torch

    module, path = torchvision_file
    spec, weights = wc.load(path)
    state = module.state_dict()
    wrapped = {
        "state_dict": {"epoch": 90, "arch": "alexnet", "state_dict": state, "best_acc1": 56.5},
        "model": {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"lr": 0.01}},
    }
    for name, obj in wrapped.items():
        p = tmp_path / f"{name}.pth"
        torch.save(obj, p)
        spec2, w2, fmt = wc.load_as(str(p))
        assert fmt == "torchvision" and spec2 == spec and same_weights(weights, w2), name
    legacy = tmp_path / "legacy.pth"  # torch < 1.6 wrote a plain pickle, not a zip (alexnet-owt-4df8aa71.pth)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    spec2, w2, fmt = wc.load_as(str(legacy))
    assert fmt == "torchvision" and spec2 == spec and same_weights(weights, w2)


def test_torchvision_model_runs_the_same_in_every_framework(torchvision_file, tmp_path):
    import torch

    module, path = torchvision_file
    spec, weights = wc.load(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    _check_targets(tmp_path, spec, weights, x, expected, targets=TARGETS[:3])


def test_one_column_reimplementation_with_net_keys(tmp_path):
    torch = pytest.importorskip("torch")
    torch_impl = _impl("torch")
    torch.manual_seed(1)
    module = one_column_alexnet().eval()
    path = tmp_path / "alexnet-one-column.pth"
    torch.save(module.state_dict(), path)
    spec, weights, fmt = wc.load_as(str(path))
    assert fmt == "torchvision" and spec == get_spec("single-column")
    assert np.array_equal(weights["conv4.weight"], module.net[10].weight.detach().numpy())
    x = np.random.default_rng(1).standard_normal((1, 3, 227, 227)).astype(np.float32) * 50
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    out = torch_impl.run_activations(spec, weights, x)["fc8"]
    assert rel_err(out, expected, expected) < TOL


# --- Caffe -------------------------------------------------------------------------------------------------

CAFFE_SPEC = get_spec("caffe", input_size=71, num_classes=10)  # pool5 2x2: fc6's C,H,W order matters


@pytest.fixture(scope="module")
def caffe_weights():
    return parity_weights(CAFFE_SPEC, seed=2)


def test_bvlc_v1_caffemodel_with_legacy_blobs(tmp_path, caffe_weights):
    pytest.importorskip("google.protobuf")
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_bytes(bvlc_net_bytes(CAFFE_SPEC, caffe_weights, "layers", crop_size=80))
    spec, weights = wc.load(str(path))
    # the variant from the layer order and LRN constants, the input size from the data layer's crop_size
    assert spec == get_spec("caffe", input_size=80, num_classes=10)
    assert same_weights(caffe_weights, weights)
    x = parity_input(CAFFE_SPEC)
    expected = reference_forward(CAFFE_SPEC, caffe_weights, x)["fc8"]
    _check_targets(tmp_path, CAFFE_SPEC, weights, x, expected, targets=TARGETS[:1] + TARGETS[3:])


def test_crop_size_of_an_older_data_layer(tmp_path, caffe_weights):
    pytest.importorskip("google.protobuf")
    path = tmp_path / "old.caffemodel"
    path.write_bytes(bvlc_net_bytes(CAFFE_SPEC, caffe_weights, "layers", crop_size=90, crop_in="data_param"))
    assert wc.load(str(path))[0] == get_spec("caffe", input_size=90, num_classes=10)


def test_caffenet_new_container_and_prototxt(tmp_path):
    pytest.importorskip("google.protobuf")
    spec = get_spec("caffenet", include_top=False)
    w = parity_weights(spec, seed=3)
    full = tmp_path / "bvlc_reference_caffenet.caffemodel"
    full.write_bytes(bvlc_net_bytes(spec, w, "layer"))
    spec2, w2 = wc.load(str(full))
    assert spec2 == spec and same_weights(w, w2)
    # parameter layers only: the shapes fit three variants, a deploy prototxt says which
    bare = tmp_path / "bare.caffemodel"
    bare.write_bytes(bvlc_net_bytes(spec, w, "layer", with_structure=False))
    with pytest.raises(ValueError, match=r"fit paper, caffe, caffenet.*--variant"):
        wc.load(str(bare))
    for v1 in (False, True):
        proto = tmp_path / f"deploy{int(v1)}.prototxt"
        proto.write_text(bvlc_deploy_prototxt(spec, v1=v1))
        spec3, w3 = wc.load(str(bare), prototxt=str(proto))
        assert spec3 == spec and same_weights(w, w3)
    wrong = tmp_path / "caffe_deploy.prototxt"
    wrong.write_text(bvlc_deploy_prototxt(get_spec("caffe", include_top=False)))
    with pytest.raises(ValueError, match="contradict"):
        wc.load(str(full), prototxt=str(wrong))
    spec4, _ = wc.load(str(bare), prototxt=str(wrong))  # the prototxt alone decides a bare file
    assert spec4.variant == "caffe"


def test_unpacked_float_blobs(tmp_path):
    """proto2 readers accept repeated floats written one key per value; old writers did that."""
    pytest.importorskip("google.protobuf")
    spec = get_spec("paper", include_top=False)
    w = parity_weights(spec, seed=4)
    path = tmp_path / "unpacked.caffemodel"
    path.write_bytes(bvlc_net_bytes(spec, w, "layers", packed_data=False))
    spec2, w2 = wc.load(str(path))
    assert spec2 == spec and same_weights(w, w2)


@pytest.mark.parametrize("container", ["layer", "layers"])
def test_our_caffemodel_parses_with_protobuf(tmp_path, container, caffe_weights):
    pytest.importorskip("google.protobuf")
    spec = get_spec("single-column", include_top=False, input_size=99)
    w = parity_weights(spec, seed=5)
    path = tmp_path / "ours.caffemodel"
    wc.save(str(path), spec, w, container=container)
    net = caffe_messages()["NetParameter"].FromString(path.read_bytes())
    layers = net.layer if container == "layer" else net.layers
    assert list(net.input_dim) == [1, 3, 99, 99]
    by_name = {layer.name: layer for layer in layers}
    assert [layer.name for layer in layers][:4] == ["conv1", "relu1", "norm1", "pool1"]
    conv2 = by_name["conv2"]
    assert conv2.convolution_param.num_output == 256 and conv2.convolution_param.group == 1
    blob = conv2.blobs[0]
    shape = tuple(blob.shape.dim) if container == "layer" else (blob.num, blob.channels, blob.height, blob.width)
    assert shape == (256, 96, 5, 5)
    assert np.array_equal(np.array(blob.data, dtype=np.float32).reshape(shape), w["conv2.weight"])
    assert by_name["norm1"].lrn_param.local_size == 5
    assert by_name["norm1"].lrn_param.k == 2.0 and np.isclose(by_name["norm1"].lrn_param.alpha, 1e-4)


# --- TF-slim ------------------------------------------------------------------------------------------------

def test_slim_checkpoint_from_slim_variable_names(tmp_path):
    tf = pytest.importorskip("tensorflow")
    spec = get_spec("slim-v2", input_size=99, num_classes=10)  # pool5 2x2: fc6 is a 2x2 VALID conv
    w = parity_weights(spec, seed=6)
    prefix = str(tmp_path / "model.ckpt-100000")
    slim_checkpoint(prefix, spec, w)
    names = dict(tf.train.list_variables(prefix))
    assert names["alexnet_v2/fc6/weights"] == [2, 2, 256, 4096] and "global_step" in names
    spec2, w2 = wc.load(prefix)  # variant, input size and classes from the variables alone
    assert spec2 == spec and same_weights(w, w2)
    x = parity_input(spec)
    expected = slim_forward(spec, prefix, x)
    _check_targets(tmp_path, spec, w2, x, expected, targets=TARGETS[1:3])
    # and back: our slim writer gives exactly slim's names and shapes
    ours = str(tmp_path / "ours.ckpt")
    wc.save(ours, spec, w2)
    written = dict(tf.train.list_variables(ours))
    assert written == {k: v for k, v in names.items() if k.startswith("alexnet_v2/") and "Momentum" not in k}
    assert np.array_equal(slim_forward(spec, ours, x), expected)


# --- files the frameworks write themselves (no alexnet metadata) ----------------------------------------------

def test_files_written_by_the_frameworks_themselves(tmp_path):
    """torch.save(model.state_dict()), model.save_weights / model.save, and Orbax / msgpack of nnx.state:
    what a user of each impl writes without weights_convert; and each impl loads what we write."""
    spec = get_spec("slim-v2", include_top=False)
    w = parity_weights(spec, seed=8)
    if importlib.util.find_spec("torch"):
        import torch

        from alexnet_parity import torch_impl
        model = torch_impl.build_model(spec, weights=w)
        torch.save(model.state_dict(), tmp_path / "user.pt")
        assert same_weights(w, wc.load(str(tmp_path / "user.pt"))[1])
        wc.save(str(tmp_path / "ours.pt"), spec, w)
        fresh = torch_impl.build_model(spec)
        fresh.load_state_dict(torch.load(tmp_path / "ours.pt", weights_only=True))
        assert same_weights(w, torch_impl.export_weights(fresh))
    if importlib.util.find_spec("tensorflow"):
        from alexnet_parity import tf_impl
        model = tf_impl.build_model(spec, weights=w)
        model.save_weights(str(tmp_path / "user.weights.h5"))
        model.save(str(tmp_path / "user.keras"))
        for name in ("user.weights.h5", "user.keras"):
            spec2, w2 = wc.load(str(tmp_path / name))
            assert spec2 == spec and same_weights(w, w2), name
        wc.save(str(tmp_path / "ours.weights.h5"), spec, w)
        fresh = tf_impl.build_model(spec)
        fresh.load_weights(str(tmp_path / "ours.weights.h5"))
        assert same_weights(w, tf_impl.export_weights(fresh))
    if importlib.util.find_spec("flax"):
        import orbax.checkpoint as ocp
        from flax import nnx, serialization

        from alexnet_parity import jax_impl
        model = jax_impl.build_model(spec, weights=w)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(str(tmp_path / "user_orbax"), nnx.state(model))
        checkpointer.wait_until_finished()
        (tmp_path / "user.msgpack").write_bytes(serialization.to_bytes(nnx.to_pure_dict(nnx.state(model))))
        for name in ("user_orbax", "user.msgpack"):
            spec2, w2 = wc.load(str(tmp_path / name), variant="slim-v2")
            assert spec2 == spec and same_weights(w, w2), name
        wc.save(str(tmp_path / "ours.msgpack"), spec, w)
        fresh = jax_impl.build_model(spec)
        state = nnx.state(fresh)
        nnx.replace_by_pure_dict(state, serialization.msgpack_restore((tmp_path / "ours.msgpack").read_bytes()))
        nnx.update(fresh, state)
        assert same_weights(w, jax_impl.export_weights(fresh))
