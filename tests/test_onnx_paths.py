"""Every way an AlexNet becomes ONNX, for every variant: the spec's own export, torch's two exporters
(TorchScript-based `torch.onnx.export(dynamo=False)` and `dynamo=True`) of a torch_impl model, and Keras'
`model.export(format="onnx")` of a tf_impl model. Each file that comes out runs in ONNX Runtime against the
float64 reference (within 1e-5: every layer where the export exposes them, the logits always) and reads back
through the structural reader to the canonical weights bit for bit. An exporter that refuses is shown refusing,
with its own error; README's "Which ONNX export to use" is this file's table.

And onnx.reference's ReferenceEvaluator, the ONNX standard's own Python evaluator, as a second check of the
spec's ONNX graph: small configs in CI, every parity config in the slow tests.

CI runs each path on one small config per variant (the geometry of the full size: ceil pools as pads, groups,
both LRN orders, SAME pads, overlapping adaptive bins); the slow tests run the variants at their full sizes."""
from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from alexnet_parity import onnx_impl  # noqa: E402
from alexnet_parity import weights_convert as wc  # noqa: E402
from alexnet_parity.common import VARIANTS, AdaptiveAvgPool, get_spec, reference_forward  # noqa: E402
from alexnet_parity.onnx_impl import evaluator  # noqa: E402
from alexnet_parity.parity_tests.core import (CONFIGS, TOLERANCE, config_id, parity_input, parity_weights,  # noqa: E402
                                              rel_err)

from _convert_util import frameworks_present, same_weights  # noqa: E402

# One small config per variant, with its classifier (fc6 reads a flatten of 2x2 or more: a flatten-order bug
# shows), at sizes where each variant's own rounding matters.
SMALL = {"paper": dict(input_size=99, num_classes=3),          # conv1 padded after only, ceil pools
         "caffe": dict(input_size=107, num_classes=3),         # pool pads on the far side
         "caffenet": dict(input_size=107, num_classes=3),      # pool then norm
         "single-column": dict(input_size=91, num_classes=3),
         "torchvision": dict(input_size=160, num_classes=3),   # adaptive 4 -> 6 (torch's exporter: uniform only)
         "slim-v2": dict(input_size=75, num_classes=3)}        # SAME with odd pads
assert set(SMALL) == set(VARIANTS)

CASES = ([pytest.param(v, o, id=config_id(v, o)) for v, o in SMALL.items()]
         + [pytest.param(v, {}, id=v, marks=pytest.mark.slow) for v in VARIANTS])


def _torch():
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    import torch
    return torch


def torch_export(spec, weights, *, dynamo: bool, every_layer: bool = False) -> bytes:
    """torch.onnx.export of torch_impl's model; every_layer: of a wrapper whose outputs are every named layer."""
    torch = _torch()
    from alexnet_parity import torch_impl
    from alexnet_parity.torch_impl.run import activations

    model = torch_impl.build_model(spec, weights).eval()

    class EveryLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return tuple(activations(self.net, x).values())

    names = [layer.name for layer in spec.layers] if every_layer else ["logits"]
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(EveryLayer() if every_layer else model, (torch.zeros(1, *spec.input_shape),), f,
                          opset_version=17, dynamo=dynamo, input_names=["x"], output_names=names,
                          dynamic_axes={"x": {0: "batch"}})
    return f.getvalue()


def keras_export(spec, weights, path) -> None:
    """Keras' own exporter on tf_impl's model (the TensorFlow backend goes through tf2onnx)."""
    if not frameworks_present("keras"):
        pytest.skip("needs keras")
    from alexnet_parity import tf_impl

    model = tf_impl.build_model(spec, weights)
    model(np.zeros((1, spec.input_size, spec.input_size, 3), np.float32))  # Keras exports only a called model
    model.export(str(path), format="onnx")


def _ort_outputs(model, x) -> dict[str, np.ndarray]:
    sess = onnx_impl.session(model)
    return onnx_impl.activations(sess, x)


def _assert_layers_match(got: dict, spec, weights, x):
    ref = reference_forward(spec, weights, x)
    errors = {name: rel_err(got[name], ref[name], ref[name]) for name in got}
    assert set(errors) == set(ref)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: {errors[worst]:.2e}"


def _assert_reads_back(path, spec, weights):
    spec2, back = wc.load(str(path))
    assert spec2 == spec and same_weights(back, weights)


# --- the spec's own ONNX ----------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,overrides", CASES)
def test_spec_export(tmp_path, variant, overrides):
    spec = get_spec(variant, **overrides)
    weights, x = parity_weights(spec), parity_input(spec)
    _assert_layers_match(_ort_outputs(onnx_impl.build_model(spec, weights, outputs="all").SerializeToString(), x),
                         spec, weights, x)
    path = tmp_path / "spec.onnx"
    onnx.save(onnx_impl.build_model(spec, weights), str(path))
    _assert_reads_back(path, spec, weights)


# --- torch.onnx.export, TorchScript-based ------------------------------------------------------------------

def torch_refuses(spec) -> bool:
    """Where torch's exporter refuses: an AdaptiveAvgPool whose input is not a whole multiple of its output
    (torchvision at 160 pools 4x4 up to 6x6, at 256 7x7 down to 6x6, in overlapping bins); it lowers only
    the uniform case, to an AveragePool."""
    return any(isinstance(layer, AdaptiveAvgPool) and layer.in_shape[1] % layer.output_size for layer in spec.layers)


@pytest.mark.parametrize("variant,overrides", CASES)
def test_torch_torchscript_export(tmp_path, variant, overrides):
    """torch_impl through the TorchScript-based exporter: right for every variant at every size where it
    exports at all, and it refuses, with its own error and nothing written, where the adaptive pool's bins
    overlap; the spec's export (test_spec_export) writes those bins exactly (two MatMuls) and is the path to
    use there."""
    spec = get_spec(variant, **overrides)
    weights, x = parity_weights(spec), parity_input(spec)
    if torch_refuses(spec):
        with pytest.raises(Exception, match="adaptive_avg_pool2d, output size that are not factor of input size"):
            torch_export(spec, weights, dynamo=False)
        return
    _assert_layers_match(_ort_outputs(torch_export(spec, weights, dynamo=False, every_layer=True), x),
                         spec, weights, x)
    path = tmp_path / "torch.onnx"
    path.write_bytes(torch_export(spec, weights, dynamo=False))
    (logits,) = _ort_outputs(str(path), x).values()
    ref = reference_forward(spec, weights, x)[spec.layers[-1].name]
    assert rel_err(logits, ref, ref) <= TOLERANCE
    _assert_reads_back(path, spec, weights)


# --- torch.onnx.export(dynamo=True) ------------------------------------------------------------------------

DYNAMO_CASES = [pytest.param("caffe", SMALL["caffe"], id="caffe@107/3cls")] + [
    pytest.param(v, o, id=config_id(v, o), marks=pytest.mark.slow) for v, o in SMALL.items() if v != "caffe"]


@pytest.mark.parametrize("variant,overrides", DYNAMO_CASES)
def test_torch_dynamo_export(tmp_path, variant, overrides):
    """The dynamo exporter writes through onnxscript; where that is not installed (this project does not pin
    it) it refuses before it looks at the model, whatever the variant: the TorchScript-based exporter above is
    the path to use. Where onnxscript is installed the file is held to the same checks as every other path."""
    spec = get_spec(variant, **overrides)
    weights, x = parity_weights(spec), parity_input(spec)
    if importlib.util.find_spec("onnxscript") is None:
        _torch()
        with pytest.raises(ImportError, match="onnxscript"):
            torch_export(spec, weights, dynamo=True)
        return
    path = tmp_path / "dynamo.onnx"
    path.write_bytes(torch_export(spec, weights, dynamo=True))
    (logits,) = _ort_outputs(str(path), x).values()
    ref = reference_forward(spec, weights, x)[spec.layers[-1].name]
    assert rel_err(logits, ref, ref) <= TOLERANCE
    _assert_reads_back(path, spec, weights)


# --- Keras' model.export(format="onnx") --------------------------------------------------------------------

KERAS_CASES = [pytest.param("caffe", SMALL["caffe"], id="caffe@107/3cls")] + [
    pytest.param(v, o, id=config_id(v, o), marks=pytest.mark.slow) for v, o in SMALL.items() if v != "caffe"]


@pytest.mark.parametrize("variant,overrides", KERAS_CASES)
def test_keras_export(tmp_path, variant, overrides):
    """Keras 3 on the TensorFlow backend exports ONNX through tf2onnx, which is not a dependency here (its
    releases pin numpy and protobuf below what TensorFlow 2.21 needs): Keras refuses with its own ImportError
    and writes nothing. Export from the spec instead (`alexnet convert model.weights.h5 model.onnx`), which is
    the same network: test_spec_export. Where tf2onnx is installed, the file gets every other path's checks."""
    spec = get_spec(variant, **overrides)
    weights, x = parity_weights(spec), parity_input(spec)
    path = tmp_path / "keras.onnx"
    if importlib.util.find_spec("tf2onnx") is None:
        with pytest.raises(ImportError, match="requires the tf2onnx module"):
            keras_export(spec, weights, path)
        assert not path.exists()
        return
    keras_export(spec, weights, path)
    (logits,) = _ort_outputs(str(path), np.ascontiguousarray(x.transpose(0, 2, 3, 1))).values()  # NHWC input
    ref = reference_forward(spec, weights, x)[spec.layers[-1].name]
    assert rel_err(logits, ref, ref) <= TOLERANCE
    _assert_reads_back(path, spec, weights)


# --- onnx.reference ------------------------------------------------------------------------------------------

def test_stock_reference_evaluator_lrn_runs_over_the_batch_axis():
    """onnx.reference's own LRN (onnx/onnx#7805, fixed upstream by #8331, after onnx 1.23) loops over the batch
    axis: one image of three channels gets channel 0 normalized and channels 1, 2 divided by bias**beta alone.
    The evaluator module hands it the operator as ONNX documents it instead."""
    if evaluator.stock_lrn_is_right():
        pytest.skip(f"onnx {onnx.__version__}'s reference LRN is right: evaluator's override is no longer used")
    from onnx.reference import ReferenceEvaluator

    x = np.arange(1, 4, dtype=np.float32).reshape(1, 3, 1, 1)
    (stock,) = ReferenceEvaluator(evaluator._lrn_graph()).run(None, {"x": x})  # size 3, alpha 3, beta 1, bias 1
    sums = np.array([1 + 4, 1 + 4 + 9, 4 + 9], np.float32)  # each channel's window of squares
    np.testing.assert_allclose(evaluator.session(evaluator._lrn_graph()).run(None, {"x": x})[0].ravel(),
                               x.ravel() / (1 + sums), rtol=1e-6)
    np.testing.assert_allclose(stock.ravel(), [1 / (1 + 5), 2, 3], rtol=1e-6)  # channels 1, 2 untouched


EVALUATOR_CASES = ([pytest.param(v, o, id=config_id(v, o)) for v, o in SMALL.items()]
                   + [pytest.param(v, o, id=config_id(v, o), marks=pytest.mark.slow) for v, o in CONFIGS])


@pytest.mark.parametrize("variant,overrides", EVALUATOR_CASES)
def test_reference_evaluator_matches_the_reference_at_every_layer(variant, overrides):
    spec = get_spec(variant, **overrides)
    weights, x = parity_weights(spec), parity_input(spec)
    _assert_layers_match(evaluator.run_activations(spec, weights, x), spec, weights, x)
