"""tf_impl: the Keras AlexNet against the float64 reference, layer by layer, and as a Keras citizen
(native init, weight round trips, .keras files under safe_mode, fit, summary)."""
import ast
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_parity import tf_impl  # noqa: E402
from alexnet_parity.common import VARIANTS, get_spec, reference_forward, smallest_input_size  # noqa: E402
from alexnet_parity.common.reference import adaptive_avg_pool, lrn, max_pool  # noqa: E402
from alexnet_parity.common import LRN, AdaptiveAvgPool, MaxPool  # noqa: E402
from alexnet_parity.parity_tests.core import IMPL_CONFIGS_IN_CI, config_id  # noqa: E402
from alexnet_parity.tf_impl.layers import (AdaptiveAvgPool2D, Float32AccumulatingDense, GroupedConv2D,  # noqa: E402
                                          LocalResponseNorm, NegInfPadding2D)

TOL = 1e-5


def lively_weights(spec, seed=0):
    """He-scaled normal weights and small uniform biases: activations stay O(input) through every
    layer, and every weight varies over space and channel, so a transposed kernel or a flatten-order
    bug changes the numbers (the variants' own N(0, 0.01) would make deep layers vanish)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in spec.param_layers:
        std = np.float32(np.sqrt(2.0 / layer.fan_in))
        weights[f"{layer.name}.weight"] = rng.standard_normal(layer.weight_shape, dtype=np.float32) * std
        weights[f"{layer.name}.bias"] = rng.uniform(-0.1, 0.1, layer.weight_shape[:1]).astype(np.float32)
    return weights


def images(spec, n=2, seed=1, scale=50.0):
    """NCHW inputs; scale 50 keeps the LRN terms comparable to k, so LRN is really exercised."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *spec.input_shape)) * scale).astype(np.float32)


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def assert_parity(spec, weights, x, got):
    ref = reference_forward(spec, weights, x)
    assert list(got) == list(ref), "activations must name every spec layer, in order"
    errors = {}
    for name, r in ref.items():
        assert got[name].shape == r.shape, f"{name}: shape {got[name].shape} != {r.shape}"
        assert got[name].dtype == np.float32
        errors[name] = rel_err(got[name], r)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{spec.describe()}: {worst} off by {errors[worst]:.2e} relative ({errors})"


# --- parity with the float64 reference ------------------------------------------------------------
PARITY_CASES = [(v, {}) for v in VARIANTS] + [
    ("torchvision", dict(input_size=256)),   # adaptive pool 7 -> 6: overlapping bins
    ("torchvision", dict(input_size=320)),   # 9 -> 6
    ("caffe", dict(input_size=256)),         # ceil pooling with -inf padding, 7x7 pool5
    ("paper", dict(input_size=227)),         # no conv1 pad (224 pads 0 before, 3 after)
    ("caffenet", dict(num_classes=10)),
    ("slim-v2", dict(include_top=False)),
    ("torchvision", dict(include_top=False)),
]


@pytest.mark.parametrize("variant,overrides", [
    pytest.param(v, o, marks=() if config_id(v, o) in IMPL_CONFIGS_IN_CI else pytest.mark.slow)
    for v, o in PARITY_CASES], ids=[
    f"{v}-{'-'.join(f'{k}={o}' for k, o in kw.items()) or 'default'}" for v, kw in PARITY_CASES])
def test_every_layer_matches_reference(variant, overrides):
    spec = get_spec(variant, **overrides)
    weights = lively_weights(spec)
    x = images(spec)
    assert_parity(spec, weights, x, tf_impl.run_activations(spec, weights, x))


@pytest.mark.skipif("gpu" not in tf_impl.devices(), reason="TensorFlow sees no GPU")
@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_gpu_matches_reference(variant):
    spec = get_spec(variant)
    weights = lively_weights(spec)
    x = images(spec)
    assert_parity(spec, weights, x, tf_impl.run_activations(spec, weights, x, device="gpu"))


def test_fc6_rows_are_permuted_for_nhwc_flatten():
    """Weights varying over space make the flatten order visible: the same model with fc6 loaded as a
    plain transpose (the classic port bug) is far off, the permuted one matches."""
    spec = get_spec("paper", input_size=100, num_classes=10)  # pool5 is 3x3, so the order matters
    assert spec.layer("flatten").in_shape[1:] == (3, 3)
    weights = lively_weights(spec)
    x = images(spec)
    logits = reference_forward(spec, weights, x)["fc8"]
    model = tf_impl.build_model(spec, weights)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    assert rel_err(model(x_nhwc).numpy(), logits) <= TOL
    assert rel_err(model.infer(x_nhwc).numpy(), logits) <= TOL  # the compiled path too
    model.get_layer("fc6").kernel.assign(weights["fc6.weight"].T)
    assert rel_err(model(x_nhwc).numpy(), logits) > 1e-2


# --- the custom layers, on inputs the whole net never gives them ------------------------------------
@pytest.mark.parametrize("size,k,beta,scale", [(5, 2.0, 0.75, 1e-4), (5, 1.0, 0.75, 2e-5), (4, 1.5, 0.5, 1e-3),
                                              (3, 2.0, 1.0, 0.1)])
def test_lrn_layer_is_the_canonical_formula(size, k, beta, scale):
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 16)).astype(np.float32) * 20
    ref_layer = LRN("norm", size=size, alpha=scale, beta=beta, k=k, alpha_over_n=False)
    ref = lrn(x.transpose(0, 3, 1, 2).astype(np.float64), ref_layer).transpose(0, 2, 3, 1)
    assert rel_err(LocalResponseNorm(size, k, beta, scale)(x).numpy(), ref) <= TOL


def test_max_pool_padding_is_minus_infinity():
    """All-negative input: zero padding would win the edge windows, -inf padding never does."""
    x = -1.0 - np.random.default_rng(0).random((1, 6, 8, 3)).astype(np.float32)
    layer = MaxPool("pool", kernel=3, stride=2, padding=((1, 2), (0, 1)))
    ref = max_pool(x.transpose(0, 3, 1, 2).astype(np.float64), layer).transpose(0, 2, 3, 1)
    padded = NegInfPadding2D(layer.padding)(x)
    got = keras.layers.MaxPooling2D(3, 2, padding="valid")(padded).numpy()
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("size", [1, 5, 6, 7, 9, 12, 13])
def test_adaptive_avg_pool_is_pytorch_exact(size):
    x = np.random.default_rng(0).standard_normal((2, size, size, 4)).astype(np.float32)
    ref = adaptive_avg_pool(x.transpose(0, 3, 1, 2).astype(np.float64), AdaptiveAvgPool("avgpool", output_size=6))
    got = AdaptiveAvgPool2D(6)(x).numpy()
    assert got.shape == (2, 6, 6, 4)
    assert rel_err(got, ref.transpose(0, 2, 3, 1)) <= 1e-6


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_16_bit_dense_rounds_once(dtype):
    """fc7's shape: the product summed in float32 and rounded once to the dtype, as torch and XLA do. A kernel
    that keeps partial sums in bfloat16 (TensorFlow's on a CPU without native bfloat16: Keras's own Dense on an
    AMD EPYC with AVX2) matches it in 64 % of these outputs; rounding once leaves only float32 summation-order ties."""
    rng = np.random.default_rng(0)
    x, kernel, bias = rng.standard_normal((2, 4096)), rng.standard_normal((4096, 1000)) * 0.01, rng.standard_normal(1000)
    layer = Float32AccumulatingDense(1000, dtype=dtype)
    layer.build((None, 4096))
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    as_dtype = lambda a: np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(a, dtype)).astype(np.float64))
    once = as_dtype(as_dtype(x) @ as_dtype(kernel) + as_dtype(bias))
    got = np.asarray(layer(keras.ops.cast(x, dtype)).numpy().astype(np.float64))
    assert np.mean(got == once) > 0.99
    wide, plain = Float32AccumulatingDense(1000), keras.layers.Dense(1000)  # float32: Keras's own Dense
    for d in (wide, plain):
        d.build((None, 4096))
        d.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    np.testing.assert_array_equal(wide(x.astype(np.float32)).numpy(), plain(x.astype(np.float32)).numpy())
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer), safe_mode=True)
    assert type(clone) is Float32AccumulatingDense and clone.get_config() == layer.get_config()


def test_grouped_conv_and_lrn_gradients_match_plain_tensorflow():
    """GroupedConv2D's per-group gradient and LocalResponseNorm's (through XLA) against plain TF."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, 9, 9, 8)).astype(np.float32) * 10)
    conv = GroupedConv2D(6, 3, strides=2, groups=2)
    norm = LocalResponseNorm(5, 2.0, 0.75, 1e-3)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = norm(conv(x))
        parts = zip(tf.split(x, 2, -1), tf.split(conv.kernel, 2, -1))
        plain_conv = tf.concat([tf.nn.conv2d(a, k, 2, "VALID") for a, k in parts], -1) + conv.bias
        y_plain = tf.nn.local_response_normalization(plain_conv, 2, 2.0, 1e-3, 0.75)
        probe = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
        loss, loss_plain = tf.reduce_sum(y * probe), tf.reduce_sum(y_plain * probe)
    assert rel_err(y.numpy(), y_plain.numpy()) <= TOL
    for ours, plain in zip(tape.gradient(loss, [x, conv.kernel]), tape.gradient(loss_plain, [x, conv.kernel])):
        assert rel_err(ours.numpy(), plain.numpy()) <= 1e-5


def test_lrn_leaves_compiling_to_an_enclosing_xla_function():
    """Inside jit_compile (Keras's train step on GPU) LRN must be plain ops: a nested compiled function
    there makes XLA constant-fold the following MaxPoolGrad for minutes."""
    from alexnet_parity.tf_impl.backends.tensorflow import _in_xla_context
    norm, seen = LocalResponseNorm(5, 2.0, 0.75, 1e-3), []

    def step(x):
        seen.append(_in_xla_context())
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.nn.max_pool2d(norm(x), 3, 2, "VALID") ** 2)
        return y, tape.gradient(y, x)

    x = tf.constant(np.random.default_rng(0).standard_normal((1, 7, 7, 8)).astype(np.float32) * 10)
    (y_xla, g_xla), (y, g) = tf.function(step, jit_compile=True)(x), tf.function(step)(x)
    assert seen == [True, False]
    assert rel_err(y_xla.numpy(), y.numpy()) <= TOL and rel_err(g_xla.numpy(), g.numpy()) <= TOL


# --- native init ------------------------------------------------------------------------------------
def _small(variant, **kw):
    return get_spec(variant, input_size=max(67, smallest_input_size(variant)), **kw)


# the statistics of native init are checked for every framework in parity_tests/test_native_init.py


def test_native_init_seeding():
    spec = _small("paper")
    first = tf_impl.export_weights(tf_impl.build_model(spec, seed=3))
    again = tf_impl.export_weights(tf_impl.build_model(spec, seed=3))
    other = tf_impl.export_weights(tf_impl.build_model(spec, seed=4))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["conv1.weight"], other["conv1.weight"])
    # Each layer draws its own numbers: no two N(0, 0.01) layers start with the same values.
    heads = [first[f"{layer.name}.weight"].ravel()[:64] for layer in spec.param_layers]
    assert all(not np.array_equal(a, b) for i, a in enumerate(heads) for b in heads[i + 1:])


# --- weights, spec and saving -------------------------------------------------------------------------
@pytest.mark.parametrize("variant,size", [("paper", 100), ("torchvision", 127), ("slim-v2", 131)])
def test_export_inverts_load_bit_for_bit(variant, size):
    spec = get_spec(variant, input_size=size, num_classes=7)
    weights = lively_weights(spec, seed=5)
    model = tf_impl.build_model(spec, weights)
    exported = tf_impl.export_weights(model)
    assert list(exported) == list(spec.weight_shapes())
    for key, w in weights.items():
        assert exported[key].dtype == np.float32 and np.array_equal(exported[key], w), key


def test_load_weights_replaces_every_tensor_and_refuses_wrong_ones():
    spec = get_spec("paper", input_size=100, num_classes=3)
    model = tf_impl.build_model(spec, seed=0)
    weights = lively_weights(spec, seed=2)
    tf_impl.load_weights(model, weights)
    exported = tf_impl.export_weights(model)
    assert all(np.array_equal(exported[k], w) for k, w in weights.items())
    weights["conv2.weight"] = weights["conv2.weight"][:, :10]
    with pytest.raises(ValueError, match="conv2.weight"):
        tf_impl.load_weights(model, weights)
    with pytest.raises(ValueError, match="conv2.weight"):
        tf_impl.build_model(spec, weights)


def test_a_modified_spec_is_built_as_given(tmp_path):
    """Parity's broken variants and the bench's LRN-less nets hand build_model a spec get_spec never makes."""
    spec = get_spec("caffe", input_size=103, num_classes=3)
    no_lrn = dataclasses.replace(spec, layers=tuple(layer for layer in spec.layers if layer.kind != "lrn"))
    weights = lively_weights(spec)
    x = images(spec)
    got = tf_impl.run_activations(no_lrn, weights, x)
    assert "norm1" not in got
    assert_parity(no_lrn, weights, x, got)
    model = tf_impl.build_model(no_lrn, weights)
    assert tf_impl.spec_of(model) is no_lrn
    with pytest.raises(ValueError, match="modified spec"):
        model.save(str(tmp_path / "modified.keras"))


def test_model_knows_its_spec():
    spec = get_spec("slim-v2", input_size=131, num_classes=5)
    model = tf_impl.build_model(spec, seed=0)
    assert tf_impl.spec_of(model) == spec
    assert model.output_shape == (None, 5)
    with pytest.raises(TypeError):
        tf_impl.spec_of(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


@pytest.mark.parametrize("layer", [LocalResponseNorm(4, 1.5, 0.5, 1e-3), NegInfPadding2D(((1, 2), (0, 1))),
                                   AdaptiveAvgPool2D(6)], ids=lambda layer: type(layer).__name__)
def test_custom_layers_serialize_in_safe_mode(layer):
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 8)).astype(np.float32)
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"].startswith("alexnet_parity>")
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    """caffe at 103: -inf pool padding, grouped convs, LRN, all in a .keras file that safe_mode loads."""
    spec = get_spec("caffe", input_size=103, num_classes=4)
    model = tf_impl.build_model(spec, lively_weights(spec))
    path = str(tmp_path / "alexnet.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, tf_impl.AlexNet) and tf_impl.spec_of(loaded) == spec
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert isinstance(loaded.get_layer("pool5_pad"), NegInfPadding2D)
    x = images(spec, scale=10).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    exported = tf_impl.export_weights(loaded)
    assert all(np.array_equal(w, exported[k]) for k, w in tf_impl.export_weights(model).items())


# --- Keras behaviour --------------------------------------------------------------------------------
def test_layers_carry_canonical_names_and_nhwc_activations():
    spec = get_spec("torchvision", input_size=127)
    model = tf_impl.build_model(spec, seed=0)
    for layer in spec.layers:
        assert model.get_layer(layer.name) is not None
    acts = tf_impl.activations(model, np.zeros((1, 127, 127, 3), np.float32))
    assert list(acts) == [layer.name for layer in spec.layers]
    c, h, w = spec.layer("conv1").out_shape
    assert tuple(acts["conv1"].shape) == (1, h, w, c)
    assert tuple(acts["fc8"].shape) == (1, 1000)


def test_mode_is_the_training_call_argument():
    """Keras models have no mode of their own: model(x) is inference, model(x, training=True) drops."""
    spec = get_spec("torchvision", input_size=smallest_input_size("torchvision"), num_classes=2)
    model = tf_impl.build_model(spec, lively_weights(spec))
    x = images(spec, scale=10).transpose(0, 2, 3, 1)
    plain = model(x).numpy()
    assert np.array_equal(plain, model(x).numpy()) and np.array_equal(plain, model(x, training=False).numpy())
    assert not np.allclose(plain, model(x, training=True).numpy())


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_training_mode_differs_only_by_dropout(variant):
    spec = get_spec(variant, input_size=100, num_classes=4)
    model = tf_impl.build_model(spec, lively_weights(spec))
    x = images(spec, scale=10).transpose(0, 2, 3, 1)
    drops = [layer.name for layer in spec.layers if layer.kind == "dropout"]
    eval_acts = tf_impl.activations(model, x)
    train_acts = tf_impl.activations(model, x, training=True)
    # rate 0.5 really drops in training: about half the live units, the rest scaled by 2
    live, trained = eval_acts[drops[0]].numpy() != 0, train_acts[drops[0]].numpy()
    kept = trained[live] != 0
    assert live.sum() > 1000 and 0.4 < kept.mean() < 0.6
    np.testing.assert_allclose(trained[live][kept], 2 * eval_acts[drops[0]].numpy()[live][kept], rtol=1e-6)
    for name in drops:
        model.get_layer(name).rate = 0.0
    train_acts = tf_impl.activations(model, x, training=True)
    for name, a in eval_acts.items():
        np.testing.assert_array_equal(train_acts[name].numpy(), a.numpy(), err_msg=name)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_fit_takes_finite_steps(variant):
    spec = get_spec(variant, input_size=max(67, smallest_input_size(variant)), num_classes=4)
    model = tf_impl.build_model(spec, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {k: v.copy() for k, v in tf_impl.export_weights(model).items()}
    x = images(spec, n=4, scale=1).transpose(0, 2, 3, 1)
    history = model.fit(x, np.array([0, 1, 2, 3]), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    after = tf_impl.export_weights(model)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert "conv1.weight" in changed and "fc8.weight" in changed and all(np.isfinite(w).all() for w in after.values())


def test_summary_lists_the_canonical_layers():
    spec = get_spec("caffe", input_size=103)
    model = tf_impl.build_model(spec, seed=0)
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert "conv1" in text and "norm2" in text and "fc8" in text
    assert model.count_params() == spec.param_count()


def test_devices():
    found = tf_impl.devices()
    assert found[0] == "cpu" and set(found) <= {"cpu", "gpu"}
    assert ("gpu" in found) == bool(tf.config.list_physical_devices("GPU"))


BLOCK_OTHER_FRAMEWORKS = """
import sys
attempts = []
class Block:  # as if torch, jax and flax were not installed; note who asks for them
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "jax", "jaxlib", "flax"):
            frame = sys._getframe(1)
            while frame and frame.f_code.co_filename.startswith("<frozen"):
                frame = frame.f_back
            attempts.append((name, frame.f_code.co_filename if frame else "?"))
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import numpy as np, keras
from alexnet_parity import tf_impl
from alexnet_parity.common import get_spec
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
import tensorflow as tf
model = tf_impl.build_model(get_spec("paper", input_size=100, num_classes=2), seed=0)
x = tf.constant(np.random.default_rng(0).standard_normal((2, 100, 100, 3)).astype(np.float32))
assert model.infer(x).shape == (2, 2)  # graph mode: grappler fuses conv + bias + relu
@tf.function
def gradients(x):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    return tape.gradient(loss, model.get_layer("conv2").kernel)
assert np.isfinite(gradients(x).numpy()).all()
print(repr(attempts))
"""


def test_works_without_torch_or_jax_and_never_asks_for_them():
    """Run with torch, jax and flax made unimportable. TensorFlow (tf.lite) and Keras (its Orbax
    callback) themselves try `import jax` and carry on without it; tf_impl and common never try,
    and nobody tries torch. oneDNN is off too: TF's grouped convolutions then fail in graph mode, so
    this is where the per-group path runs, forward and backward."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    done = subprocess.run([sys.executable, "-c", BLOCK_OTHER_FRAMEWORKS], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert not [name for name, _ in attempts if name.split(".")[0] == "torch"], attempts
    site = os.path.dirname(os.path.dirname(tf.__file__))
    outsiders = [(name, where) for name, where in attempts
                 if not where.startswith((os.path.join(site, "tensorflow"), os.path.join(site, "keras")))]
    assert not outsiders, outsiders
