"""Jobs tests/test_keras_backends.py runs in a worker process of each Keras backend (common.workers.run):
each builds live Keras models there and returns numpy only."""
from __future__ import annotations

import os

import numpy as np


def backend() -> str:
    import keras
    return keras.backend.backend()


def save(spec, weights: dict, folder: str) -> dict:
    """Build `spec` with `weights` on this backend, save it as NAME.keras and NAME.weights.h5 (NAME: the
    backend) with Keras's own model.save and model.save_weights; return what it exported."""
    from alexnet_parity import tf_impl
    model = tf_impl.build_model(spec, weights)
    name = os.path.join(folder, backend())
    model.save(name + ".keras")
    model.save_weights(name + ".weights.h5")
    return tf_impl.export_weights(model)


def load(spec, folder: str, saved_by: list[str], x_nhwc: np.ndarray) -> dict:
    """Every file of `saved_by`'s backends, loaded on this backend: the .keras by keras.saving.load_model
    (safe_mode) and the .weights.h5 into a fresh build_model by load_weights; their canonical weights and
    eval-mode outputs on x."""
    import keras
    from alexnet_parity import tf_impl
    out = {}
    for other in saved_by:
        name = os.path.join(folder, other)
        whole = keras.saving.load_model(name + ".keras", safe_mode=True)
        assert tf_impl.spec_of(whole) == spec
        fresh = tf_impl.build_model(spec)
        fresh.load_weights(name + ".weights.h5")
        for kind, model in (("keras", whole), ("weights.h5", fresh)):
            out[other, kind] = (tf_impl.export_weights(model),
                                np.asarray(keras.ops.convert_to_numpy(model(x_nhwc, training=False))))
    return out


def one_step(engine: str, spec, weights: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """test_train_step's one_step (gradients(), then the compiled train_step) on this process's engine."""
    from alexnet_parity.common.engines import get_engine
    from tests.test_train_step import Engine, one_step
    return one_step(Engine(get_engine(engine)), spec, weights, x, y)[0]


def portable_activations(spec, weights: dict, x_nchw: np.ndarray) -> dict:
    """run_activations with this backend's own kernels swapped for the portable code of tf_impl/layers.py (the
    fallback every other backend runs), so both paths are measured against the reference."""
    from alexnet_parity import tf_impl
    from alexnet_parity.tf_impl import backends
    backend = backends.current()
    own = backend.lrn, backend.grouped_conv
    backend.lrn = lambda portable, x, *args: portable(x, *args)
    backend.grouped_conv = None
    try:
        return tf_impl.run_activations(spec, weights, x_nchw)
    finally:
        backend.lrn, backend.grouped_conv = own
