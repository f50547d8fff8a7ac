"""jax_impl: the Flax NNX AlexNet against the float64 reference, layer by layer, plus its NNX conventions."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

import flax.serialization  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from alexnet_parity import jax_impl  # noqa: E402
from alexnet_parity.parity_tests.core import IMPL_CONFIGS_IN_CI, config_id  # noqa: E402
from alexnet_parity.common import (VARIANTS, activation_to_nchw, get_spec, init_weights, nchw_to_nhwc,  # noqa: E402
                                   reference_forward, smallest_input_size)

TOL = 1e-5


def live_weights(spec, seed=0):
    """Weights that keep every layer alive and vary over space and channel: He-scaled normals, small
    random biases, and conv1 scaled x30 (pixels-in-[0,255] magnitudes) so LRN is far from the identity."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in spec.param_layers:
        gain = 30.0 if layer.name == "conv1" else 1.0
        w = rng.standard_normal(layer.weight_shape, dtype=np.float32) * np.float32(gain * np.sqrt(2.0 / layer.fan_in))
        weights[f"{layer.name}.weight"] = w
        weights[f"{layer.name}.bias"] = (rng.standard_normal(layer.weight_shape[0]) * 0.1 * gain).astype(np.float32)
    return weights


def batch(spec, n=2, seed=1):
    return np.random.default_rng(seed).standard_normal((n, *spec.input_shape)).astype(np.float32)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


CASES = [(v, {}) for v in VARIANTS] + [
    ("torchvision", {"input_size": 256}),  # adaptive pool 7 -> 6: overlapping bins
    ("torchvision", {"input_size": 320}),  # 9 -> 6
    ("caffe", {"input_size": 256}),  # ceil pooling gives a 7x7 pool5
    ("paper", {"input_size": 227}),  # no asymmetric conv1 pad
    ("caffenet", {"num_classes": 10}),
    ("slim-v2", {"include_top": False}),
]


@pytest.mark.parametrize("variant,overrides", [
    pytest.param(v, o, marks=() if config_id(v, o) in IMPL_CONFIGS_IN_CI else pytest.mark.slow)
    for v, o in CASES], ids=[f"{v}-{o}" if o else v for v, o in CASES])
def test_every_layer_matches_reference(variant, overrides):
    spec = get_spec(variant, **overrides)
    weights, x = live_weights(spec), batch(spec)
    ref = reference_forward(spec, weights, x)
    got = jax_impl.run_activations(spec, weights, x, "cpu")
    assert list(got) == [layer.name for layer in spec.layers]
    for name, want in ref.items():
        assert got[name].dtype == np.float32 and got[name].shape == want.shape, name
        assert rel_err(got[name], want) < TOL, f"{name}: {rel_err(got[name], want):.2e}"
    assert np.abs(ref[spec.layers[-1].name]).max() > 0.1  # the weights kept the last layer alive


@pytest.mark.gpu
@pytest.mark.skipif("gpu" not in jax_impl.devices(), reason="JAX sees no GPU")
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_gpu_matches_reference(variant):
    spec = get_spec(variant)
    weights, x = live_weights(spec), batch(spec)
    ref = reference_forward(spec, weights, x)
    got = jax_impl.run_activations(spec, weights, x, "gpu")
    for name, want in ref.items():
        assert rel_err(got[name], want) < TOL, f"{name}: {rel_err(got[name], want):.2e}"


def test_fc6_reads_the_nhwc_flatten_in_canonical_order():
    """fc6's kernel rows are permuted C,H,W -> H,W,C. The classic port bug, a plain transpose, is put in
    by hand to show this test catches it."""
    spec = get_spec("caffe", input_size=115)  # pool5 3x3: the flatten mixes space and channel
    weights, x = live_weights(spec), jnp.asarray(nchw_to_nhwc(batch(spec)))
    model = jax_impl.build_model(spec, weights)
    run = nnx.jit(lambda m, x: jax_impl.activations(m, x))
    acts = run(model, x)
    flat_chw = activation_to_nchw(spec, "flatten", np.asarray(acts["flatten"], dtype=np.float64))
    want = flat_chw @ weights["fc6.weight"].T.astype(np.float64) + weights["fc6.bias"]
    assert rel_err(np.asarray(acts["fc6"]), want) < TOL
    model.fc6.kernel[...] = jnp.asarray(weights["fc6.weight"].T)  # transposed, rows not permuted
    assert rel_err(np.asarray(run(model, x)["fc6"]), want) > 0.1


def test_load_then_export_is_bit_identical():
    for variant in ("paper", "torchvision", "slim-v2"):  # grouped convs, adaptive pool, plain
        spec = get_spec(variant, input_size=smallest_input_size(variant) + 16)
        weights = live_weights(spec, seed=3)
        out = jax_impl.export_weights(jax_impl.build_model(spec, weights))
        assert list(out) == list(spec.weight_shapes())
        for key, w in weights.items():
            assert out[key].dtype == np.float32 and np.array_equal(out[key], w), key


def test_parameter_paths_and_layout_are_canonical():
    spec = get_spec("paper")
    model = jax_impl.build_model(spec, live_weights(spec))
    params = nnx.to_pure_dict(nnx.state(model))
    names = {f"{layer}.{'weight' if p == 'kernel' else p}" for layer, d in params.items() for p in d}
    assert names == set(spec.weight_shapes())
    assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)  # HWIO with I = in/groups
    assert params["fc7"]["kernel"].shape == (4096, 4096) and params["fc8"]["kernel"].shape == (4096, 1000)


def test_state_is_params_only_and_serialises():
    spec = get_spec("caffe", input_size=smallest_input_size("caffe"))
    model = jax_impl.build_model(spec, live_weights(spec))
    assert not jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))  # no RNG state in the module
    pure = nnx.to_pure_dict(nnx.state(model))
    restored = flax.serialization.from_bytes(pure, flax.serialization.to_bytes(pure))
    other = jax_impl.build_model(spec, live_weights(spec, seed=5))
    state = nnx.state(other)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(other, state)
    a, b = jax_impl.export_weights(model), jax_impl.export_weights(other)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_load_weights_checks_shapes():
    spec = get_spec("caffe")
    weights = init_weights(get_spec("caffe", input_size=256), seed=0)  # fc6 made for 256
    with pytest.raises(ValueError, match="fc6.weight"):
        jax_impl.build_model(spec, weights)
    small = get_spec("caffe", input_size=smallest_input_size("caffe"))
    model = jax_impl.build_model(small, live_weights(small))
    with pytest.raises(ValueError, match="conv1.weight"):
        jax_impl.load_weights(model, {k: v for k, v in weights.items() if k != "conv1.weight"})


def test_input_layout_is_checked():
    spec = get_spec("slim-v2", input_size=smallest_input_size("slim-v2"))
    model = jax_impl.build_model(spec, live_weights(spec))
    with pytest.raises(ValueError, match="NHWC"):
        model(jnp.zeros((1, *spec.input_shape)))  # NCHW by mistake


# --- native init -----------------------------------------------------------------------------------------

def init_spec(variant):
    return get_spec(variant, input_size=smallest_input_size(variant) + 16)  # the rules do not depend on size


# the statistics of native init are checked for every framework in parity_tests/test_native_init.py


def test_seed_makes_init_reproducible():
    spec = get_spec("torchvision", input_size=init_spec("torchvision").input_size, include_top=False)
    a, b, c, d = (jax_impl.export_weights(jax_impl.build_model(spec, seed=s)) for s in (7, 7, 8, None))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    assert not np.array_equal(a["conv1.weight"], d["conv1.weight"])  # seed=None: a fresh seed


# --- NNX conventions: split/merge, jit, train/eval ---------------------------------------------------------

@pytest.fixture(scope="module")
def small_paper():
    """Groups, LRN, ceil pooling and dropout, at a small input so compiles stay quick; in eval mode."""
    spec = get_spec("paper", input_size=smallest_input_size("paper") + 24)
    model = jax_impl.build_model(spec, live_weights(spec))
    model.eval()
    return spec, model, jnp.asarray(nchw_to_nhwc(batch(spec)))


def test_build_model_returns_train_mode_as_nnx_modules_start():
    """Like every NNX module (and torch's nn.Module), build_model's model is in train mode: dropout on,
    drawing from the call's rngs; without rngs it says what to do; .eval() turns dropout off."""
    spec = get_spec("torchvision", input_size=smallest_input_size("torchvision"), num_classes=2)
    model = jax_impl.build_model(spec, live_weights(spec))
    x = jnp.asarray(nchw_to_nhwc(batch(spec)))
    assert all(d.deterministic is False for d in (model.drop6, model.drop7))
    a, b = (np.asarray(model(x, rngs=nnx.Rngs(dropout=s))) for s in (0, 1))
    assert not np.allclose(a, b)  # two masks, two outputs
    with pytest.raises(ValueError, match="train mode.*rngs=nnx.Rngs.*model.eval()"):
        model(x)
    model.eval()
    assert np.array_equal(np.asarray(model(x)), np.asarray(model(x)))
    assert np.array_equal(np.asarray(model(x)), np.asarray(model(x, deterministic=True)))


def test_split_merge_round_trip(small_paper):
    spec, model, x = small_paper
    graphdef, state = nnx.split(model)
    again = nnx.merge(graphdef, state)
    assert again.spec == spec
    assert np.array_equal(np.asarray(again(x)), np.asarray(model(x)))


def test_jit_matches_eager(small_paper):
    spec, model, x = small_paper
    eager = jax_impl.activations(model, x)
    jitted = nnx.jit(lambda m, x: jax_impl.activations(m, x))(model, x)
    for name in eager:
        assert rel_err(np.asarray(jitted[name]), np.asarray(eager[name])) < TOL, name
    fast = jax_impl.jit_forward(model)
    assert rel_err(np.asarray(fast(x)), np.asarray(eager["fc8"])) < TOL
    assert rel_err(np.asarray(nnx.jit(lambda m, x: m(x))(model, x)), np.asarray(eager["fc8"])) < TOL


def test_dropout_only_in_train_mode(small_paper):
    spec, model, x = small_paper
    evaluated = np.asarray(model(x))
    assert np.array_equal(np.asarray(model(x)), evaluated)  # eval mode: deterministic
    model.train()
    try:
        a = model(x, rngs=nnx.Rngs(dropout=0))
        b = model(x, rngs=nnx.Rngs(dropout=0))
        c = model(x, rngs=nnx.Rngs(dropout=1))
        jitted = nnx.jit(lambda m, x, r: m(x, rngs=r))(model, x, nnx.Rngs(dropout=0))
    finally:
        model.eval()
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), evaluated) and not np.allclose(np.asarray(a), np.asarray(c))
    assert rel_err(np.asarray(jitted), np.asarray(a)) < TOL  # same key, same mask under jit
    np.testing.assert_array_equal(np.asarray(model(x)), evaluated)  # back in eval mode

    acts = jax_impl.activations(model, x, training=True, rngs=nnx.Rngs(dropout=2))
    relu6, drop6 = np.asarray(acts["relu6"]), np.asarray(acts["drop6"])
    kept = drop6 != 0
    np.testing.assert_allclose(drop6[kept], 2 * relu6[kept], rtol=1e-6)  # rate 0.5: survivors scaled by 2
    alive = relu6 != 0
    assert 0.4 < 1 - kept[alive].mean() < 0.6


def test_rate_zero_dropout_is_the_identity_in_train_mode(small_paper):
    spec, _, x = small_paper
    no_drop = spec.replace_layers("dropout", rate=0.0)
    model = jax_impl.build_model(no_drop, live_weights(spec))
    model.eval()
    evaluated = np.asarray(model(x))
    model.train()
    assert np.array_equal(np.asarray(model(x, rngs=nnx.Rngs(dropout=0))), evaluated)


def test_devices_lists_cpu():
    assert jax_impl.devices()[0] == "cpu"
    with pytest.raises(ValueError):
        jax_impl.run_activations(get_spec("caffe"), {}, np.zeros((1, 3, 227, 227), np.float32), "tpu")


def test_import_pulls_in_no_other_framework():
    code = ("import sys, alexnet_parity.jax_impl; bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fast_layers_have_the_plain_gradients():
    """The sliced max pool and the rsqrt LRN differentiate like lax.reduce_window and the plain formula."""
    from jax import lax

    from alexnet_parity.jax_impl.layers import lrn, max_pool

    spec = get_spec("caffe", input_size=119)  # pool1 rounds 28 -> 14 up: an extra -inf row and column
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 28, 28, 8), dtype=np.float32) * 20)
    norm, pool = spec.layer("norm1"), spec.layer("pool1")
    assert pool.padding == ((0, 1), (0, 1))

    def plain_lrn(x):
        sq = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (2, 2)))
        return x / (norm.k + norm.scale * sum(sq[..., i:i + x.shape[-1]] for i in range(5))) ** norm.beta

    def plain_pool(x):
        (t, b), (l, r) = pool.padding
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (t, b), (l, r), (0, 0)))

    for fast, plain in ((lambda x: lrn(x, norm), plain_lrn), (lambda x: max_pool(x, pool), plain_pool)):
        assert rel_err(np.asarray(fast(x)), np.asarray(plain(x))) < 1e-6
        g_fast = jax.grad(lambda x: jnp.sum(fast(x) ** 2))(x)
        g_plain = jax.grad(lambda x: jnp.sum(plain(x) ** 2))(x)
        assert rel_err(np.asarray(g_fast), np.asarray(g_plain)) < 1e-5


@pytest.mark.parametrize("variant,size", [("caffe", 227), ("slim-v2", 224), ("slim-v2", 226), ("caffe", 230),
                                          ("paper", 224), ("torchvision", 224)])
def test_conv_padding_adds_only_unread_zeros(variant, size):
    """conv_padding's extra trailing row and column (XLA:CPU's fast path) never change the output, and are
    only added to an unpadded strided conv whose windows cannot reach them (slim-v2 at 226: 215 % 4 == 3)."""
    from jax import lax

    from alexnet_parity.jax_impl.layers import NHWC, conv_padding

    layer = get_spec(variant, input_size=size).layer("conv1")
    padding = conv_padding(layer)
    (t, b), (l, r) = layer.padding
    slack = (size + t + b - layer.kernel) % layer.stride
    expect_extra = (t, b, l, r) == (0, 0, 0, 0) and slack < layer.stride - 1
    assert padding == (((0, 1), (0, 1)) if expect_extra else layer.padding)
    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((1, size, size, 3), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((layer.kernel, layer.kernel, 3, 4), dtype=np.float32))
    conv = lambda pad: lax.conv_general_dilated(x, k, (layer.stride,) * 2, pad, dimension_numbers=NHWC)
    assert np.array_equal(np.asarray(conv(padding)), np.asarray(conv(layer.padding)))
    assert conv(padding).shape[1:3] == layer.out_shape[1:]


def test_float64_needs_x64_and_leaves_the_process_float32():
    """float64 runs inside jax.enable_x64(True), a context: outside it x64 stays off (jnp defaults float32), a float32
    run after a float64 one is bit-identical to one before, and build_model(dtype='float64') outside says what to do."""
    spec = get_spec("caffe", input_size=smallest_input_size("caffe"), num_classes=10)
    w, x = live_weights(spec), batch(spec)
    assert not jax.config.jax_enable_x64
    with pytest.raises(ValueError, match=r"^dtype 'float64' needs JAX's 64-bit mode: .*enable_x64"):
        jax_impl.build_model(spec, w, dtype="float64")
    before = jax_impl.run_activations(spec, w, x)
    acts64 = jax_impl.run_activations(spec, w, x, dtype="float64")
    assert not jax.config.jax_enable_x64 and jnp.asarray(1.0).dtype == jnp.float32
    after = jax_impl.run_activations(spec, w, x)
    assert all(np.array_equal(before[k], after[k]) and after[k].dtype == np.float32 for k in before)
    ref = reference_forward(spec, w, x)
    assert acts64["fc8"].dtype == np.float64
    assert max(np.abs(acts64[k] - ref[k]).max() / np.abs(ref[k]).max() for k in ref) < 1e-12
    with jax.enable_x64(True):
        model = jax_impl.build_model(spec, w, dtype="float64")
        assert model.fc8.kernel[...].dtype == jnp.float64


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_parameters_and_round_trip(dtype):
    spec = get_spec("caffe", input_size=smallest_input_size("caffe"), include_top=False)
    w = live_weights(spec)
    model = jax_impl.build_model(spec, w, dtype=dtype)
    assert model.conv1.kernel[...].dtype == jnp.dtype(dtype) and model.conv5.bias[...].dtype == jnp.dtype(dtype)
    back = jax_impl.export_weights(model)
    assert all(np.array_equal(back[k], np.asarray(jnp.asarray(w[k], dtype=dtype), dtype=np.float32)) for k in w)
