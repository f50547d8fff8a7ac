"""tf_impl's record in the engine registry (common.engines). Plain data: reading it imports no TensorFlow."""
from alexnet_parity.common.engines import BenchPath, Engine

ENGINE = Engine(
    name="keras", package="alexnet_parity.tf_impl", requires=("tensorflow", "keras"), extra="tf",
    formats=("keras", "slim"), suffix=".weights.h5", layout="NHWC", color="tab:blue",
    bench_paths=(BenchPath("graph", "tf.function graph", "#3182bd"),
                 BenchPath("xla", "tf.function(jit_compile=True)", "#08519c")),
    runner="alexnet_parity.tf_impl.bench:KerasRunner",
    adapter="alexnet_parity.tf_impl.adapter:KerasAdapter",
    train="alexnet_parity.tf_impl.train", autodiff=True,
    env={"KERAS_BACKEND": "tensorflow"},
    threads="alexnet_parity.tf_impl.threads:set_threads")
