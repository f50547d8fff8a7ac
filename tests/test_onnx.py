"""ONNX: the spec's own export against the float64 reference in ONNX Runtime, the importer (our files,
torch.onnx.export's, the model zoo's Caffe2-named bvlc_alexnet layout), the format in `alexnet convert`,
and bad files (truncated, random, external data outside the folder, absurd sizes, cycles, opsets)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from alexnet_parity import onnx_impl  # noqa: E402
from alexnet_parity import weights_convert as wc  # noqa: E402
from alexnet_parity.alexnet_cli.main import main  # noqa: E402
from alexnet_parity.common import get_spec, reference_forward  # noqa: E402
from alexnet_parity.parity_tests.core import (CONFIGS, TOLERANCE, config_id, parity_input, parity_weights,  # noqa: E402
                                              rel_err)

from _convert_util import frameworks_present, same_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small specs with the geometry of each full-size config: ceil pooling with pads, conv1 padded after only,
# overlapping adaptive bins, TF SAME at odd sizes, groups, both LRN orders.
SMALL = (("paper", dict(input_size=99, include_top=False)),           # conv1 pad (0, 2), ceil pools
         ("caffe", dict(input_size=107, num_classes=3)),              # pool pads after, fc6 over 2x2
         ("caffenet", dict(input_size=87, include_top=False)),
         ("single-column", dict(input_size=91, include_top=False)),
         ("torchvision", dict(input_size=83, include_top=False)),     # adaptive 1 -> 6, overlapping
         ("torchvision", dict(input_size=160, include_top=False)),    # adaptive 4 -> 6
         ("slim-v2", dict(input_size=75, include_top=False)),         # SAME with odd pads
         ("torchvision", dict(include_top=False)))


def _parity(spec):
    weights, x = parity_weights(spec), parity_input(spec)
    ref = reference_forward(spec, weights, x)
    acts = onnx_impl.run_activations(spec, weights, x)
    assert list(acts) == list(ref)
    return {name: rel_err(acts[name], ref[name], ref[name]) for name in ref}


@pytest.mark.parametrize("variant,overrides", SMALL, ids=[config_id(v, o) for v, o in SMALL])
def test_ort_matches_the_reference_at_every_layer(variant, overrides):
    errors = _parity(get_spec(variant, **overrides))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: {errors[worst]:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("variant,overrides", CONFIGS, ids=[config_id(v, o) for v, o in CONFIGS])
def test_every_parity_config(variant, overrides):
    errors = _parity(get_spec(variant, **overrides))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: {errors[worst]:.2e}"


def test_the_graph_is_what_the_spec_says():
    spec = get_spec("paper", input_size=224, include_top=False)
    model = onnx_impl.build_model(spec, parity_weights(spec))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    nodes = {n.name: n for n in model.graph.node}
    attrs = {name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for name, n in nodes.items()}
    assert attrs["conv1"]["pads"] == [0, 0, 3, 3]             # cuda-convnet's round-up at 224
    assert attrs["conv2"]["group"] == 2
    assert attrs["norm1"]["alpha"] == pytest.approx(5e-4)     # the paper's 1e-4, times size for ONNX's alpha/size
    assert attrs["norm1"]["bias"] == 2.0
    assert "ceil_mode" not in attrs["pool1"] and "auto_pad" not in attrs["conv1"]
    caffe = onnx_impl.build_model(get_spec("caffe", input_size=224, include_top=False), check=False)
    lrn = next(n for n in caffe.graph.node if n.op_type == "LRN")
    assert helper.get_attribute_value(lrn.attribute[[a.name for a in lrn.attribute].index("alpha")]) == pytest.approx(1e-4)
    pool1 = next(n for n in caffe.graph.node if n.name == "pool1")
    assert [helper.get_attribute_value(a) for a in pool1.attribute if a.name == "pads"] == [[0, 0, 1, 1]]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["variant"] == "paper" and props["input_size"] == "224" and spec.to_json() == props["spec"]
    assert '"color_order": "RGB"' in props["preprocessing"]
    everything = onnx_impl.build_model(spec, parity_weights(spec), outputs="all")
    assert [o.name for o in everything.graph.output] == [layer.name for layer in spec.layers]


def test_dynamic_batch():
    spec = get_spec("caffe", input_size=107, num_classes=2)
    weights = parity_weights(spec)
    sess = onnx_impl.session(onnx_impl.build_model(spec, weights))
    for batch in (1, 3):
        x = parity_input(spec, batch=batch)
        (y,) = sess.run(None, {"input": x})
        ref = reference_forward(spec, weights, x)["fc8"]
        assert y.shape == (batch, 2) and rel_err(y, ref, ref) < TOLERANCE


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external"])
def test_round_trip_is_bit_identical(tmp_path, external):
    spec = get_spec("caffe", input_size=107, num_classes=3)
    weights = parity_weights(spec, seed=3)
    path = tmp_path / "a.onnx"
    wc.save(str(path), spec, weights, external_data=external)
    assert os.path.exists(str(path) + ".data") == external
    if external:
        assert os.path.getsize(path) < 10_000
    spec2, back = wc.load(str(path))
    assert spec2 == spec and same_weights(back, weights)
    assert same_weights(onnx_impl.export_weights(onnx_impl.build_model(spec, weights)), weights)


# --- the model zoo's bvlc_alexnet layout -------------------------------------------------------------------

def zoo_bvlc_alexnet(weights: dict, opset: int = 9, input_size: int = 224) -> onnx.ModelProto:
    """The ONNX model zoo's bvlc_alexnet as Caffe2 exported it: Caffe2 names, input data_0 1x3x224x224 (no
    dynamic batch), conv1 unpadded (54x54), max pools padded by one on the far side, LRN with Caffe's
    constants, Reshape to (-1, 9216), Gemm transB=1, Dropout, Softmax, initializers also listed as inputs."""
    nodes, inits = [], []

    def tensor(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    x = "data_0"
    for i in range(1, 6):
        w = tensor(f"conv{i}_w_0", weights[f"conv{i}.weight"])
        b = tensor(f"conv{i}_b_0", weights[f"conv{i}.bias"])
        k, stride, pad, group = {1: (11, 4, 0, 1), 2: (5, 1, 2, 2), 3: (3, 1, 1, 1), 4: (3, 1, 1, 2),
                                 5: (3, 1, 1, 2)}[i]
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}_1"], kernel_shape=[k, k], strides=[stride] * 2,
                                      pads=[pad] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"conv{i}_1"], [f"conv{i}_2"]))
        x = f"conv{i}_2"
        if i in (1, 2):
            nodes.append(helper.make_node("LRN", [x], [f"norm{i}_1"], size=5, alpha=1e-4, beta=0.75, bias=1.0))
            x = f"norm{i}_1"
        if i in (1, 2, 5):
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{i}_1"], kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[0, 0, 1, 1]))
            x = f"pool{i}_1"
    shape = tensor("OC2_DUMMY_1", np.array([-1, weights["fc6.weight"].shape[1]], dtype=np.int64))
    nodes.append(helper.make_node("Reshape", [x, shape], ["OC2_DUMMY_0"]))
    x = "OC2_DUMMY_0"
    for i in (6, 7, 8):
        w = tensor(f"fc{i}_w_0", weights[f"fc{i}.weight"])
        b = tensor(f"fc{i}_b_0", weights[f"fc{i}.bias"])
        nodes.append(helper.make_node("Gemm", [x, w, b], [f"fc{i}_1"], transB=1))
        x = f"fc{i}_1"
        if i < 8:
            nodes.append(helper.make_node("Relu", [x], [f"fc{i}_2"]))
            nodes.append(helper.make_node("Dropout", [f"fc{i}_2"], [f"fc{i}_3", f"_fc{i}_mask"], ratio=0.5))
            x = f"fc{i}_3"
    nodes.append(helper.make_node("Softmax", [x], ["prob_1"]))
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, input_size, input_size])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "bvlc_alexnet", inputs,
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, len(weights["fc8.bias"])])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx-caffe2")
    model.ir_version = 3
    return model


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    spec = get_spec("caffe", input_size=224)
    weights = parity_weights(spec, seed=5)
    path = tmp_path_factory.mktemp("zoo") / "bvlc_alexnet.onnx"
    model = zoo_bvlc_alexnet(weights)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path, spec, weights


def test_zoo_layout_loads_as_caffe_at_224(zoo):
    path, spec, weights = zoo
    spec2, back = wc.load(str(path))
    assert spec2 == spec and spec2.describe() == "caffe (input 224)"
    assert same_weights(back, weights)


def _softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_every_engine_agrees_with_ort_on_the_zoo_file(zoo):
    """Logits of ORT's own run of the zoo-layout file (fc8_1, before its Softmax) against torch, Keras,
    Flax and ORT on the spec's export, built from the weights the importer read."""
    path, _, _ = zoo
    spec, weights = wc.load(str(path))
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info("fc8_1", TensorProto.FLOAT, [1, 1000]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = parity_input(spec, batch=1)
    prob, logits = sess.run(["prob_1", "fc8_1"], {"data_0": x})
    ref = reference_forward(spec, weights, x)["fc8"]
    assert rel_err(logits, ref, ref) < TOLERANCE
    assert np.abs(prob - _softmax(ref)).max() < TOLERANCE
    engines = {"onnxruntime": onnx_impl}
    for name, package, module in (("torch", "torch", "torch_impl"), ("keras", "keras", "tf_impl"),
                                  ("flax", "flax", "jax_impl")):
        if frameworks_present(package) or __import__("importlib").util.find_spec(package):
            engines[name] = __import__(f"alexnet_parity.{module}", fromlist=["run_activations"])
    assert len(engines) == 4, f"missing engines: {sorted({'torch', 'keras', 'flax'} - set(engines))}"
    for name, impl in engines.items():
        theirs = impl.run_activations(spec, weights, x)["fc8"]
        assert rel_err(theirs, logits, ref) < TOLERANCE, name


def _convert_both_ways(path, spec, weights, tmp_path, capsys):
    if not frameworks_present("flax"):
        pytest.skip("needs flax")
    msgpack = tmp_path / "alexnet.msgpack"
    assert main(["convert", str(path), str(msgpack), "--verify", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"{spec.describe()}, {spec.param_count():,} parameters" in out
    line = next(line for line in out.splitlines() if line.startswith("verify:"))
    assert "16 tensors bit-identical" in line and "onnxruntime vs flax" in line
    back = tmp_path / "back.onnx"
    # a .msgpack records no variant, and caffe, caffenet and paper share shapes
    assert main(["convert", str(msgpack), str(back), "--variant", "caffe", "--input-size", str(spec.input_size),
                 "--verify", "-q"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("verify:"))
    assert "flax vs onnxruntime" in line
    spec2, again = wc.load(str(back))
    assert spec2 == spec and same_weights(again, weights)


def test_convert_a_zoo_layout_file_to_flax_and_back_with_verify(tmp_path, capsys):
    """The zoo's layout at a small size (pool pads on the far side at 107 too), both ways, with --verify."""
    spec = get_spec("caffe", input_size=107, num_classes=3)
    weights = parity_weights(spec, seed=6)
    path = tmp_path / "small_zoo.onnx"
    path.write_bytes(zoo_bvlc_alexnet(weights, input_size=107).SerializeToString())
    _convert_both_ways(path, spec, weights, tmp_path, capsys)


@pytest.mark.slow
def test_convert_the_zoo_file_to_flax_and_back_with_verify(zoo, tmp_path, capsys):
    path, spec, weights = zoo
    _convert_both_ways(path, spec, weights, tmp_path, capsys)


# --- torch.onnx.export ---------------------------------------------------------------------------------------

def _torch_export(module, spec, **kw) -> bytes:
    import torch

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, *spec.input_shape),), f, opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}}, **kw)
    return f.getvalue()


@pytest.mark.parametrize("variant,overrides", [("torchvision", dict(num_classes=2)),  # AdaptiveAvgPool: AveragePool
                                               ("slim-v2", dict(input_size=75, include_top=False))])  # SAME: F.pad
def test_torch_export_of_a_torch_impl_model_loads_back(tmp_path, variant, overrides):
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    from alexnet_parity import torch_impl

    spec = get_spec(variant, **overrides)
    weights = parity_weights(spec)
    path = tmp_path / "exported.onnx"
    path.write_bytes(_torch_export(torch_impl.build_model(spec, weights), spec))
    spec2, back = wc.load(str(path))
    assert spec2 == spec and same_weights(back, weights)


def test_torch_export_of_torchvisions_own_alexnet_loads_back(tmp_path):
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    import torch

    from _convert_util import torchvision_alexnet

    torch.manual_seed(0)
    net = torchvision_alexnet(num_classes=2)
    spec = get_spec("torchvision", num_classes=2)
    path = tmp_path / "tv.onnx"
    path.write_bytes(_torch_export(net, spec))
    spec2, back = wc.load(str(path))
    assert spec2 == spec
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    assert np.array_equal(back["conv2.weight"], state["features.3.weight"])
    assert np.array_equal(back["fc6.weight"], state["classifier.1.weight"])


def test_torch_export_refuses_overlapping_adaptive_bins():
    """What torch's exporter does with torchvision at 256 (pool5 7x7 -> 6x6): it refuses; our export is the
    path that works there (test_every_parity_config covers torchvision@256 and @320)."""
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    from alexnet_parity import torch_impl

    spec = get_spec("torchvision", input_size=256, num_classes=2)
    with pytest.raises(Exception, match="not factor of input size"):
        _torch_export(torch_impl.build_model(spec, seed=0), spec)


@pytest.mark.parametrize("variant,overrides,grad", [
    ("caffe", dict(input_size=107, num_classes=3), True),            # Caffe's LRN, ceil pools padded after
    ("paper", dict(input_size=99, include_top=False), False),        # the paper's LRN, conv1 padded after only
    ("caffenet", dict(input_size=87, include_top=False), True),
    ("single-column", dict(input_size=91, include_top=False), False)])
def test_torch_export_of_lrn_variants_loads_back(tmp_path, variant, overrides, grad):
    """torch_impl's LRN exports as one ONNX LRN node. Before it did, torch's TorchScript exporter traced the
    in-place LRN kernel into Mul/Add/Sqrt nodes that drop the neighbours' squares (ORT's logits off by ~20%
    of their scale, and the importer refused the graph), and an export under no_grad failed on the fast
    max pool's maximum(..., out=)."""
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    import torch

    from alexnet_parity import torch_impl

    spec = get_spec(variant, **overrides)
    weights = parity_weights(spec)
    path = tmp_path / "lrn.onnx"
    with torch.set_grad_enabled(grad):
        path.write_bytes(_torch_export(torch_impl.build_model(spec, weights), spec))
    lrn = [n for n in onnx.load(str(path)).graph.node if n.op_type == "LRN"]
    assert len(lrn) == 2
    x = parity_input(spec)
    (y,) = onnx_impl.session(str(path)).run(None, {"x": x})
    ref = reference_forward(spec, weights, x)[spec.layers[-1].name]
    assert rel_err(y, ref, ref) < TOLERANCE
    spec2, back = wc.load(str(path))
    assert spec2 == spec and same_weights(back, weights)


def test_torch_export_of_nn_local_response_norm_is_not_an_lrn_node(tmp_path):
    """What torch's exporter does with torch's own nn.LocalResponseNorm (the common one-column port): a
    Mul/Pad/AveragePool/If subgraph, no ONNX LRN node. ORT runs it right; the importer, which reads LRN
    nodes, refuses it at its first node that is not a layer, and says which."""
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    import torch

    from _convert_util import one_column_alexnet

    torch.manual_seed(0)
    net = one_column_alexnet(num_classes=2)
    spec = get_spec("single-column", num_classes=2)
    path = tmp_path / "one_column.onnx"
    path.write_bytes(_torch_export(net, spec))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "LRN" not in ops and "AveragePool" in ops
    x = parity_input(spec, batch=1)
    (y,) = onnx_impl.session(str(path)).run(None, {"x": x})
    with torch.no_grad():
        t = net.eval()(torch.from_numpy(x)).numpy()
    assert rel_err(y, t, t) < TOLERANCE
    with pytest.raises(ValueError, match=r"one_column\.onnx: node '[^']*' \(Mul\): .* one chain of layers"):
        wc.load(str(path))


# --- bad input -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    spec = get_spec("caffe", input_size=107, num_classes=3)
    weights = parity_weights(spec, seed=2)
    return spec, weights, onnx_impl.build_model(spec, weights, check=False)


def _convert_fails(src, dst, capsys, *needles):
    rc = main(["convert", str(src), str(dst), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and str(src) in err
    for needle in needles:
        assert needle in err, err
    assert not os.path.exists(dst)
    assert not [n for n in os.listdir(os.path.dirname(dst)) if n.startswith(".")]
    return err


def test_truncated_and_random_files(tmp_path, small_model, capsys):
    spec, weights, model = small_model
    data = model.SerializeToString()
    for name, content in (("truncated.onnx", data[:len(data) // 2]), ("random.onnx", os.urandom(4096)),
                          ("empty.onnx", b""), ("text.onnx", b"not an onnx model\n" * 10)):
        (tmp_path / name).write_bytes(content)
        _convert_fails(tmp_path / name, tmp_path / "out.safetensors", capsys)


def _external(tmp_path, model, location):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    t = next(t for t in m.graph.initializer if t.name == "conv1.weight")
    nbytes = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return m, nbytes


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(tmp_path, small_model, capsys, how, monkeypatch):
    spec, weights, model = small_model
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(weights["conv1.weight"].tobytes())  # the right bytes: only the place is wrong
    folder = tmp_path / "model"
    folder.mkdir()
    location = {"dotdot": "../outside/secret.bin", "absolute": str(secret), "symlink": "link.bin"}[how]
    if how == "symlink":
        os.symlink(secret, folder / "link.bin")
    m, _ = _external(tmp_path, model, location)
    src = folder / "evil.onnx"
    src.write_bytes(m.SerializeToString())
    opened = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    _convert_fails(src, folder / "out.safetensors", capsys, "conv1.weight", "outside the model's folder")
    assert str(os.path.realpath(secret)) not in opened


def test_external_data_inside_the_folder_loads(tmp_path, small_model):
    spec, weights, model = small_model
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(weights["conv1.weight"].tobytes())
    m, _ = _external(tmp_path, model, "sub/w.bin")
    (tmp_path / "ok.onnx").write_bytes(m.SerializeToString())
    spec2, back = wc.load(str(tmp_path / "ok.onnx"))
    assert same_weights(back, weights)


def test_absurd_declared_sizes_are_refused_before_reading(tmp_path, small_model, capsys):
    spec, weights, model = small_model
    m, _ = _external(tmp_path, model, "w.bin")
    t = next(t for t in m.graph.initializer if t.name == "conv1.weight")
    del t.dims[:]
    t.dims.extend([1 << 40, 1 << 20, 11, 11])
    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    (tmp_path / "huge.onnx").write_bytes(m.SerializeToString())
    _convert_fails(tmp_path / "huge.onnx", tmp_path / "out.safetensors", capsys, "conv1.weight")
    # inline: dims that do not match the bytes present
    m2 = onnx.ModelProto()
    m2.CopyFrom(model)
    t = next(t for t in m2.graph.initializer if t.name == "fc6.weight")
    t.raw_data = t.raw_data[:100]
    (tmp_path / "short.onnx").write_bytes(m2.SerializeToString())
    _convert_fails(tmp_path / "short.onnx", tmp_path / "out.safetensors", capsys, "fc6.weight", "holds 100")


def test_cycles_opsets_and_foreign_nodes(tmp_path, small_model, capsys):
    spec, weights, model = small_model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    relu = next(n for n in m.graph.node if n.name == "relu3")
    relu.input[0] = "relu4"  # relu3 <- relu4 <- conv4 <- relu3
    (tmp_path / "cycle.onnx").write_bytes(m.SerializeToString())
    _convert_fails(tmp_path / "cycle.onnx", tmp_path / "o.safetensors", capsys, "cycle")

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.opset_import[0].version = 99
    (tmp_path / "opset.onnx").write_bytes(m.SerializeToString())
    _convert_fails(tmp_path / "opset.onnx", tmp_path / "o.safetensors", capsys, "opset 99")

    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = next(n for n in m.graph.node if n.name == "relu2")
    node.op_type = "Sigmoid"
    (tmp_path / "sigmoid.onnx").write_bytes(m.SerializeToString())
    _convert_fails(tmp_path / "sigmoid.onnx", tmp_path / "o.safetensors", capsys, "node 'relu2' (Sigmoid)")

    m = onnx.ModelProto()
    m.CopyFrom(model)
    lrn = next(n for n in m.graph.node if n.name == "norm1")
    next(a for a in lrn.attribute if a.name == "alpha").f = 5e-4  # the paper's constant on caffe's k=1
    (tmp_path / "lrn.onnx").write_bytes(m.SerializeToString())
    _convert_fails(tmp_path / "lrn.onnx", tmp_path / "o.safetensors", capsys, "node 'norm1' (LRN)", "alpha=0.0005")

    m = onnx.ModelProto()
    m.CopyFrom(model)
    pool = next(n for n in m.graph.node if n.name == "pool2")
    next(a for a in pool.attribute if a.name == "pads").ints[:] = [0, 0, 0, 0]  # floor rounding at 12: 5, not 6
    (tmp_path / "pads.onnx").write_bytes(m.SerializeToString())
    _convert_fails(tmp_path / "pads.onnx", tmp_path / "o.safetensors", capsys, "node 'pool2' (MaxPool)", "5x5")


def test_importing_onnx_impl_imports_no_other_framework():
    code = ("import sys; from alexnet_parity import onnx_impl, weights_convert; "
            "print([m for m in ('torch', 'tensorflow', 'keras', 'jax', 'flax') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-1000:]
