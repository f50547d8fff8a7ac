"""torch_impl: per-layer parity with the float64 reference, native init by each variant's rule, exact
weights in and out, training mode, the fast LRN, torch.compile, and no TensorFlow/JAX on import."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from alexnet_parity import torch_impl as ti  # noqa: E402
from alexnet_parity.common import LRN, VARIANTS, get_spec, reference_forward, smallest_input_size  # noqa: E402
from alexnet_parity.common.reference import lrn as reference_lrn  # noqa: E402
from alexnet_parity.parity_tests.core import IMPL_CONFIGS_IN_CI, parity_input, parity_weights, rel_err  # noqa: E402
from alexnet_parity.parity_tests.core import config_id as parity_config_id  # noqa: E402

TOL = 1e-5

CONFIGS = [(v, {}) for v in VARIANTS] + [
    ("torchvision", {"input_size": 256}),  # adaptive pool 7 -> 6: overlapping bins
    ("torchvision", {"input_size": 320}),  # 9 -> 6
    ("caffe", {"input_size": 256}),  # round-up pooling past the edge: -inf padded pools, 7x7 pool5
    ("paper", {"input_size": 227}),  # no conv1 padding
    ("paper", {"input_size": 52}),  # the smallest: asymmetric conv1 pad and -inf padded pools together
    ("caffenet", {"num_classes": 10}),
    ("torchvision", {"include_top": False}),
]


def small_paper():
    """The paper net at its smallest input: LRN, groups, an asymmetric conv1 pad and -inf padded pools."""
    spec = get_spec("paper", input_size=smallest_input_size("paper"))
    assert spec.layer("conv1").padding[0][0] != spec.layer("conv1").padding[0][1]
    assert spec.layer("pool1").padding[0] != (0, 0)
    return spec


def config_id(config):
    variant, overrides = config
    return variant + "".join(f"-{k}={v}" for k, v in overrides.items())


# --- parity ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [pytest.param(c, marks=() if parity_config_id(*c) in IMPL_CONFIGS_IN_CI
                                                 else pytest.mark.slow) for c in CONFIGS], ids=config_id)
def test_every_layer_matches_the_reference(config):
    variant, overrides = config
    spec = get_spec(variant, **overrides)
    weights, x = parity_weights(spec), parity_input(spec, batch=2)
    ref = reference_forward(spec, weights, x)
    acts = ti.run_activations(spec, weights, x)
    assert list(acts) == [layer.name for layer in spec.layers]
    for name, expected in ref.items():
        assert acts[name].dtype == np.float32 and acts[name].shape == expected.shape, name
        err = rel_err(acts[name], expected, expected)
        assert err < TOL, f"{name}: {err:.2e}"


@pytest.mark.parametrize("variant,overrides", [("paper", {"input_size": 52}),
                                               ("torchvision", {"input_size": 64, "include_top": False})])
def test_forward_is_the_last_activation(variant, overrides):
    spec = get_spec(variant, **overrides)
    model = ti.build_model(spec, parity_weights(spec)).eval()
    x = torch.from_numpy(parity_input(spec))
    with torch.no_grad():
        out, acts = model(x), ti.activations(model, x)
    assert out.shape == (2, *spec.output_shape)
    assert torch.equal(out, acts[spec.layers[-1].name])
    assert (acts["conv1"] < 0).any(), "the in-place ReLU overwrote the recorded conv1 output"
    assert torch.equal(acts["relu1"], acts["conv1"].relu()), "an in-place layer overwrote the recorded relu1"


def test_wrong_input_shape_says_what_the_model_takes():
    spec = get_spec("caffe")
    model = ti.build_model(spec, seed=0)
    with pytest.raises(ValueError, match=r"caffe \(input 227\) takes \(N, 3, 227, 227\)"):
        model(torch.zeros(1, 3, 224, 224))


# --- native init ---------------------------------------------------------------------------------------

# the statistics of native init are checked for every framework in parity_tests/test_native_init.py


def test_paper_bias_constants_are_exact():
    w = ti.export_weights(ti.build_model(get_spec("paper"), seed=0))
    for name, value in [("conv1", 0), ("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1), ("fc6", 1),
                        ("fc7", 1), ("fc8", 0)]:
        assert np.all(w[f"{name}.bias"] == value), name


def test_seed_and_global_rng():
    spec = get_spec("torchvision", include_top=False)
    a, b, c = (ti.export_weights(ti.build_model(spec, seed=s)) for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    torch.manual_seed(7)
    d = ti.export_weights(ti.build_model(spec))
    torch.manual_seed(7)
    e = ti.export_weights(ti.build_model(spec))
    assert all(np.array_equal(d[k], e[k]) for k in d)
    assert not np.array_equal(d["conv1.weight"], a["conv1.weight"])


# --- weights in and out ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_is_the_canonical_checkpoint(variant):
    spec = get_spec(variant)
    model = ti.AlexNet(spec, device="meta")  # structure only: no memory, no init
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == spec.weight_shapes()
    assert list(model.state_dict()) == list(spec.weight_shapes())
    assert [name for name, _ in model.named_children()] == [layer.name for layer in spec.layers]


def test_weights_round_trip_bit_identical():
    spec = get_spec("caffe", input_size=smallest_input_size("caffe"))  # the size does not matter here
    weights = parity_weights(spec)
    model = ti.build_model(spec, weights)
    out = ti.export_weights(model)
    assert list(out) == list(spec.weight_shapes())
    for k, v in weights.items():
        assert out[k].dtype == np.float32 and np.array_equal(out[k], v), k
    out["conv1.weight"][0, 0, 0, 0] += 1.0  # a copy, not a view into the model
    assert model.conv1.weight[0, 0, 0, 0].item() == weights["conv1.weight"][0, 0, 0, 0]

    other = ti.build_model(spec, seed=1)
    ti.load_weights(other, weights)
    assert all(np.array_equal(v, weights[k]) for k, v in ti.export_weights(other).items())
    fresh = ti.build_model(spec, seed=2)
    fresh.load_state_dict(model.state_dict())  # a torch-format checkpoint is just this state_dict
    assert all(np.array_equal(v, weights[k]) for k, v in ti.export_weights(fresh).items())


def test_load_refuses_a_checkpoint_for_another_input_size():
    weights = parity_weights(get_spec("caffe"))
    with pytest.raises(ValueError, match=r"fc6\.weight.*made for input size .*not 256"):
        ti.build_model(get_spec("caffe", input_size=256), weights)
    model = ti.build_model(get_spec("caffe", input_size=256), seed=0)
    before = model.conv1.weight.clone()
    with pytest.raises(ValueError, match="made for input size .*not 256"):
        ti.load_weights(model, weights)
    assert torch.equal(model.conv1.weight, before), "a refused checkpoint must leave the model untouched"
    del weights["fc8.bias"]
    with pytest.raises(ValueError, match="missing tensor 'fc8.bias'"):
        ti.build_model(get_spec("caffe"), weights)


# --- training mode ----------------------------------------------------------------------------------------

def test_build_model_returns_train_mode_as_nn_module_does():
    """torch's default, which Flax NNX shares: dropout on until .eval(); the spec's dropouts drop."""
    spec = get_spec("torchvision", input_size=smallest_input_size("torchvision"), num_classes=2)
    model = ti.build_model(spec, parity_weights(spec))
    assert model.training and all(m.training for m in model.modules())
    x = torch.from_numpy(parity_input(spec, batch=2))
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        assert not torch.equal(a, model(x))  # two masks
        assert torch.equal(model.eval()(x), model(x))


@pytest.fixture(scope="module")
def torchvision_small():
    spec = get_spec("torchvision", input_size=64)
    return ti.build_model(spec, parity_weights(spec)), torch.from_numpy(parity_input(spec, batch=4))


def test_training_without_dropout_equals_eval(torchvision_small):
    model, x = torchvision_small
    model.eval()
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    try:
        for m in dropouts:
            m.p = 0.0
        with torch.no_grad():
            train = ti.activations(model, x, training=True)
            evals = ti.activations(model, x)
    finally:
        for m in dropouts:
            m.p = 0.5
    assert all(torch.equal(train[k], evals[k]) for k in evals)
    assert not model.training  # activations restores the model's mode


def test_dropout_rate_is_the_drop_probability_at_the_spec_position(torchvision_small):
    model, x = torchvision_small  # torchvision drops the *inputs* of fc6 and fc7
    torch.manual_seed(0)
    with torch.no_grad():
        acts = ti.activations(model, x, training=True)
    alive = acts["flatten"] != 0
    kept = acts["drop6"] != 0
    assert abs(kept[alive].float().mean().item() - 0.5) < 0.03  # thousands of live inputs: 0.03 is over 5 sigma
    assert not kept[~alive].any()
    assert torch.allclose(acts["drop6"][kept], 2 * acts["flatten"][kept])
    caffe = get_spec("caffe")
    assert [layer.name for layer in caffe.layers][-6:] == ["relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]


def test_training_step_gives_the_lrn_and_padding_gradients():
    spec = small_paper()
    model = ti.build_model(spec, parity_weights(spec)).train()
    x = torch.from_numpy(parity_input(spec, batch=2)).requires_grad_()
    model(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert x.grad.abs().sum() > 0


# --- LRN -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 4, 5, 9])
@pytest.mark.parametrize("beta", [0.75, 0.6])  # 0.75 takes the rsqrt/sqrt path, others pow
def test_lrn_matches_the_definition_and_torch(size, beta, monkeypatch):
    monkeypatch.setattr(ti.layers, "CHUNK_ELEMENTS", 1)  # one sample per chunk: the chunk loop runs
    g = torch.Generator().manual_seed(size)
    x = torch.randn(3, 7, 3, 4, generator=g, dtype=torch.float64) * 40  # size 9 > 7 channels: edges everywhere
    scale, k = 1e-4, 2.0
    expected = reference_lrn(x.numpy(), LRN("norm", size=size, alpha=scale, beta=beta, k=k, alpha_over_n=False))
    with torch.no_grad():
        fast = ti.local_response_norm(x, size, scale, beta, k)
        inplace = x.clone()
        out = ti.local_response_norm(inplace, size, scale, beta, k, inplace=True)
    np.testing.assert_allclose(fast.numpy(), expected, rtol=1e-12)
    assert out is inplace and torch.equal(out, fast)
    # the autograd path: same values, and torch's own LRN (which divides alpha by n) agrees on gradients
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = ti.local_response_norm(xa, size, scale, beta, k, inplace=True)  # never in place under autograd
    theirs = F.local_response_norm(xb, size, alpha=scale * size, beta=beta, k=k)
    np.testing.assert_allclose(ours.detach().numpy(), expected, rtol=1e-12)
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ours.backward(upstream)
    theirs.backward(upstream)
    np.testing.assert_allclose(xa.grad.numpy(), xb.grad.numpy(), rtol=1e-10, atol=1e-14)
    # the out-of-place formula torch.compile traces, in values and gradients
    xc = x.clone().requires_grad_()
    traced = ti.layers._local_response_norm_formula(xc, size, scale, beta, k)
    np.testing.assert_allclose(traced.detach().numpy(), expected, rtol=1e-12)
    traced.backward(upstream)
    np.testing.assert_allclose(xc.grad.numpy(), xb.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_lrn_float32_within_a_micro_of_float64():
    x = torch.randn(4, 96, 13, 13, generator=torch.Generator().manual_seed(0)).relu_() * 60
    expected = reference_lrn(x.double().numpy(), LRN("norm", size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_n=False))
    with torch.no_grad():
        got = ti.local_response_norm(x, 5, 1e-4, 0.75, 2.0).double().numpy()
    assert rel_err(got, expected, expected) < 1e-6


# --- max pool ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,kernel,stride", [((2, 5, 55, 55), 3, 2), ((2, 3, 12, 13), 3, 2), ((1, 2, 9, 8), 2, 3),
                                                 ((2, 4, 7, 7), 5, 1), ((1, 1, 3, 3), 3, 2)])
def test_max_pool_is_torch_max_pool_bit_for_bit(shape, kernel, stride):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = float("-inf")
    with torch.no_grad():
        got = ti.max_pool2d(x, kernel, stride)
    assert got.is_contiguous() and torch.equal(got, F.max_pool2d(x, kernel, stride))


def test_padded_max_pool_sees_only_real_pixels():
    x = -torch.rand(1, 1, 4, 4) - 1  # all negative: a zero pad would win every edge window
    pool = ti.MaxPool2d(3, 2, pad=(0, 1, 0, 1))
    with torch.no_grad():
        got = pool(x)
    assert got.shape == (1, 1, 2, 2)
    assert got[0, 0, 1, 1] == x[0, 0, 2:, 2:].max()


# --- devices, compile, isolation ----------------------------------------------------------------------

def test_devices_and_unknown_device():
    assert ti.devices()[0] == "cpu"
    assert ("gpu" in ti.devices()) == torch.cuda.is_available()
    spec = get_spec("torchvision", input_size=64, include_top=False)
    with pytest.raises(ValueError, match="unknown device"):
        ti.run_activations(spec, parity_weights(spec), parity_input(spec), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            ti.run_activations(spec, parity_weights(spec), parity_input(spec), device="gpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU")
def test_gpu_matches_the_reference_with_tf32_off():
    spec = get_spec("paper")
    weights, x = parity_weights(spec), parity_input(spec)
    ref = reference_forward(spec, weights, x)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    acts = ti.run_activations(spec, weights, x, device="gpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags  # restored
    for name in ref:
        assert rel_err(acts[name], ref[name], ref[name]) < TOL, name


# inductor: -m slow (~30 s of C++ builds); aot_eager proves in CI that the whole net is captured in one graph
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_matches_eager(backend):
    """aot_eager traces and functionalizes the whole net (the in-place LRN included) in ~5 s; inductor
    also generates and builds C++ kernels (the longer of the two)."""
    spec = small_paper()
    model = ti.build_model(spec, parity_weights(spec)).eval()
    x = torch.from_numpy(parity_input(spec, batch=2))
    compiled = torch.compile(model, backend=backend, fullgraph=True)  # fullgraph: no graph breaks
    with torch.no_grad():
        eager, out = model(x), compiled(x)
    assert rel_err(out.numpy(), eager.numpy(), eager.numpy()) < TOL
    assert list(ti.export_weights(compiled)) == list(spec.weight_shapes())  # unwraps _orig_mod


def test_import_does_not_pull_other_frameworks():
    code = ("import sys, alexnet_parity.torch_impl; bad = sorted({m.split('.')[0] for m in sys.modules} "
            "& {'tensorflow', 'keras', 'jax', 'flax'}); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", ["float64", "bfloat16", "float16"])
def test_build_model_in_a_dtype(dtype):
    """Parameters and activations in the dtype; weights rounded to it (exact for float64); the same seed draws the
    same model in every dtype, rounded."""
    spec = get_spec("caffe", input_size=smallest_input_size("caffe"), include_top=False)  # LRN, groups, ceil pools
    w = parity_weights(spec)
    model = ti.build_model(spec, w, dtype=dtype)
    want = getattr(torch, dtype)
    assert {p.dtype for p in model.parameters()} == {want}
    back = ti.export_weights(model)
    assert all(np.array_equal(back[k], torch.from_numpy(w[k]).to(want).float().numpy()) for k in w)
    drawn32, drawn = ti.build_model(spec, seed=3), ti.build_model(spec, seed=3, dtype=dtype)
    assert all(torch.equal(a.to(want), b) for a, b in zip(drawn32.parameters(), drawn.parameters()))
    acts = ti.activations(model.eval(), torch.from_numpy(parity_input(spec)).to(want))
    assert acts[spec.layers[-1].name].dtype == want


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_lrn_is_float32_rounded_once(dtype):
    """LRN of a bfloat16/float16 tensor is the float32 LRN of the same values, rounded: inference and autograd."""
    x = (torch.rand(2, 16, 7, 7, generator=torch.Generator().manual_seed(0)) * 255).to(dtype)
    want = ti.local_response_norm(x.float(), 5, 1e-4, 0.75, 2.0).to(dtype)
    assert torch.equal(ti.local_response_norm(x, 5, 1e-4, 0.75, 2.0), want)
    xg = x.clone().requires_grad_()
    out = ti.local_response_norm(xg, 5, 1e-4, 0.75, 2.0)
    out.sum().backward()
    assert out.dtype == dtype and torch.equal(out.detach(), want) and xg.grad.dtype == dtype
    assert torch.isfinite(xg.grad).all()
