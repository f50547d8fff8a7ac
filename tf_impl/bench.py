"""tf_impl's runner for `alexnet bench` (alexnet_cli.bench_cmd drives it in its worker process)."""
from __future__ import annotations

import os

from alexnet_parity.common import get_spec


class KerasRunner:
    """tf_impl: tf.function graphs, with or without XLA; NHWC. TensorFlow places everything on the first GPU
    when it sees one; there a step ends by fetching its (small) result, which waits for the GPU."""

    def __init__(self, device: str = "cpu", tf32: str | None = None):
        import keras
        import tensorflow as tf
        from alexnet_parity import tf_impl
        self.tf, self.keras, self.impl = tf, keras, tf_impl
        self.versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        self.gpu = device == "gpu"
        if self.gpu:
            tf.config.experimental.enable_tensor_float_32_execution(tf32 == "on")

    def check_device(self) -> str | None:
        if not self.gpu:
            return None
        gpus = self.tf.config.list_physical_devices("GPU")
        if not gpus:
            raise RuntimeError("TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
        return self.tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)

    def build(self, spec, weights):
        full = get_spec(spec.variant, **spec.overrides())
        model = self.impl.build_model(full, weights)
        if spec == full:
            return model
        # tf_impl rebuilds from the variant's name, so a modified spec (LRN removed) is made here: the same
        # layers, called in order, skipping the ones the spec dropped
        keep = {layer.name for layer in spec.layers}
        x = inputs = self.keras.Input(model.input_shape[1:])
        for layer in model.layers:
            if isinstance(layer, self.keras.layers.InputLayer):
                continue
            if layer.name in keep or layer.name.removesuffix("_pad") in keep:
                x = layer(x)
        return self.keras.Model(inputs, x)

    def inputs(self, x, labels):
        return self.tf.constant(x.transpose(0, 2, 3, 1)), self.tf.constant(labels.astype("int32"))

    def step(self, model, path, mode, x, y):
        tf = self.tf
        wait = (lambda t: t.numpy()) if self.gpu else (lambda t: t)
        if mode == "infer":
            fn = tf.function(lambda x: model(x, training=False), jit_compile=path == "xla")
            return lambda: wait(fn(x))

        @tf.function(jit_compile=path == "xla")
        def train(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            grads = tape.gradient(loss, model.trainable_variables)
            return tf.add_n([tf.reduce_sum(g) for g in grads]) if self.gpu else grads  # one scalar to fetch
        return lambda: wait(train(x, y))

    def matmul(self, n: int):
        a, b = (self.tf.random.normal((n, n)) for _ in range(2))
        if self.gpu:
            return lambda: self.tf.linalg.matmul(a, b)[0, 0].numpy()
        return lambda: self.tf.linalg.matmul(a, b)

    def memory_mb(self) -> float | None:
        return self.tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20 if self.gpu else None

    def reset_peak(self) -> None:
        self.tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mb(self) -> float:
        return self.tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
