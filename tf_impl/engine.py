"""tf_impl's records in the engine registry (common.engines): one Keras model on each of Keras's three backends.
Plain data: reading them imports no framework. Each backend runs in a process whose Keras runs it (see
Engine.runs_here): keras-jax and keras-torch work from a process whose Keras runs TensorFlow through a worker."""
from alexnet_parity.common.engines import BenchPath, Engine

_KERAS = dict(package="alexnet_parity.tf_impl", formats=("keras", "slim"), suffix=".weights.h5", layout="NHWC",
              runner="alexnet_parity.tf_impl.bench:KerasRunner", adapter="alexnet_parity.tf_impl.adapter:KerasAdapter",
              train="alexnet_parity.tf_impl.train", autodiff=True)

ENGINES = (
    Engine(name="keras", requires=("tensorflow", "keras"), extra="tf", color="tab:blue",
           dtypes=("float32", "float64", "bfloat16", "float16"),
           bench_paths=(BenchPath("graph", "tf.function graph", "#3182bd"),
                        BenchPath("xla", "tf.function(jit_compile=True)", "#08519c")),
           env={"KERAS_BACKEND": "tensorflow"}, threads="alexnet_parity.tf_impl.threads:set_threads", **_KERAS),
    Engine(name="keras-jax", requires=("keras", "jax"), extra="keras-jax", color="tab:cyan",
           dtypes=("float32", "float64", "bfloat16", "float16"),
           bench_paths=(BenchPath("jit", "jax.jit of stateless_call", "#17becf"),),
           env={"KERAS_BACKEND": "jax"}, threads="alexnet_parity.jax_impl.threads:set_threads",
           imports=("jaxlib",), **_KERAS),
    Engine(name="keras-torch", requires=("keras", "torch"), extra="keras-torch", color="tab:pink",
           dtypes=("float32", "bfloat16", "float16"),  # Keras's torch backend computes float64 matmuls in float32
           bench_paths=(BenchPath("eager", "torch eager (no_grad)", "#e377c2"),),
           env={"KERAS_BACKEND": "torch"}, threads="alexnet_parity.torch_impl.threads:set_threads", **_KERAS),
)
