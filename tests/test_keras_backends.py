"""One Keras model on Keras's three backends (TensorFlow, JAX, PyTorch): files saved under each load under each
other bit-identically and compute the same outputs, and one training step of the paper's SGD is the same on
every backend as torch_impl's. Each backend runs in a worker process of its own (Keras reads its backend once
per process); the forward and gradient parity of keras-jax and keras-torch are in parity_tests with the other
engines."""
from __future__ import annotations

import numpy as np
import pytest

from alexnet_parity.common import get_spec, nchw_to_nhwc
from alexnet_parity.common.engines import get_engine
from alexnet_parity.common.workers import run
from alexnet_parity.parity_tests.core import parity_input, parity_weights, rel_err

from test_train_step import TOL, Engine, batch, clear_of_kinks, lively_weights, one_step, small_spec, worst

KERAS_ENGINES = ("keras", "keras-jax", "keras-torch")
BACKENDS = {name: get_engine(name).env["KERAS_BACKEND"] for name in KERAS_ENGINES}


def _installed(name):
    engine = get_engine(name)
    if not engine.available():
        pytest.skip(engine.missing())
    return engine


def in_backend(name: str, job: str, *args):
    """tests._keras_jobs.<job>(*args), run in the worker whose Keras runs engine `name`'s backend."""
    return run(_installed(name).env, f"tests._keras_jobs:{job}", *args)


def test_each_worker_runs_its_own_backend():
    assert {name: in_backend(name, "backend") for name in KERAS_ENGINES} == BACKENDS


@pytest.mark.parametrize("variant", ["caffe", "paper"])
@pytest.mark.parametrize("name", KERAS_ENGINES)
def test_the_portable_fallback_of_each_backends_kernels_agrees(name, variant):
    """Where a backend runs a kernel of its own (TensorFlow: XLA-compiled LRN, its grouped convolution; JAX: the
    grouped convolution split by group), the portable code it replaces is within 1e-5 of the reference too, at
    every layer: the fallback is what every other backend runs. (The kernels themselves are in the parity suite.)"""
    from alexnet_parity.common import reference_forward
    spec = get_spec(variant, input_size=99)
    weights, x = parity_weights(spec), parity_input(spec)
    got, ref = in_backend(name, "portable_activations", spec, weights, x), reference_forward(spec, weights, x)
    errors = {layer: rel_err(got[layer], ref[layer], ref[layer]) for layer in ref}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, f"{name} portable {variant}: {worst} off by {errors[worst]:.2e}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """caffe at a small size (grouped convolutions, LRN, ceil pooling's -inf padding), saved on every backend."""
    spec = get_spec("caffe", input_size=99, num_classes=10)
    weights = parity_weights(spec, seed=3)
    folder = str(tmp_path_factory.mktemp("keras-files"))
    exported = {BACKENDS[name]: in_backend(name, "save", spec, weights, folder) for name in KERAS_ENGINES}
    return spec, weights, folder, exported


def test_every_backend_exports_the_weights_it_was_given(saved):
    spec, weights, _, exported = saved
    for backend, got in exported.items():
        assert all(np.array_equal(got[k], weights[k]) for k in weights), backend


@pytest.mark.parametrize("loader", KERAS_ENGINES)
def test_files_saved_under_every_backend_load_under_this_one(saved, loader):
    """3 savers x this loader, for both files: bit-identical weights, outputs within 1e-5 of the saver's own."""
    spec, weights, folder, _ = saved
    x = parity_input(spec, batch=2, seed=4)
    loaded = in_backend(loader, "load", spec, folder, list(BACKENDS.values()), nchw_to_nhwc(x))
    from alexnet_parity.common import reference_forward
    logits = reference_forward(spec, weights, x)["fc8"]
    assert len(loaded) == 6
    for (saver, kind), (got, out) in loaded.items():
        differ = [k for k in weights if not np.array_equal(got[k], weights[k])]
        assert not differ, f"{kind} saved by {saver}, loaded by {BACKENDS[loader]}: {differ} changed"
        err = rel_err(out, logits, logits)
        assert err <= 1e-5, f"{kind} saved by {saver}, loaded by {BACKENDS[loader]}: logits off by {err:.2e}"


@pytest.mark.parametrize("variant", ["caffe", pytest.param("torchvision", marks=pytest.mark.slow)])
def test_one_training_step_is_torch_impls_on_every_backend(variant):
    """gradients(), velocities and weights after one compiled train_step of the paper's SGD, on each backend,
    against torch_impl's step from the same weights and batch (dropout off: the RNGs differ). CI steps caffe
    (grouped convolutions, LRN, ceil pooling); torchvision's adaptive pool is in the slow run."""
    torch = get_engine("torch")
    if not torch.available():
        pytest.skip(torch.missing())
    spec = small_spec(variant)
    x, y = batch(spec)
    weights = clear_of_kinks(spec, lively_weights(spec), x)
    want = one_step(Engine(torch), spec, weights, x, y)[0]
    for name in KERAS_ENGINES:
        got = in_backend(name, "one_step", name, spec, weights, x, y)
        assert got["loss"] == pytest.approx(want["loss"], rel=TOL), f"{name} loss"
        for part in ("grads", "velocity", "weights"):
            err, tensor = worst(got[part], want[part])
            assert err <= TOL, f"{variant}: {name} vs torch: {part} of {tensor} off by {err:.2e}"
