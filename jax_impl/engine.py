"""jax_impl's record in the engine registry (common.engines). Plain data: reading it imports no JAX."""
from alexnet_parity.common.engines import BenchPath, Engine

ENGINE = Engine(
    name="flax", package="alexnet_parity.jax_impl", requires=("jax", "flax"), extra="jax",
    formats=("flax",), suffix=".msgpack", layout="NHWC",
    dtypes=("float32", "float64", "bfloat16", "float16"), color="tab:green",
    bench_paths=(BenchPath("jit", "jax.jit of the NNX module", "#31a354"),),
    runner="alexnet_parity.jax_impl.bench:FlaxRunner",
    adapter="alexnet_parity.jax_impl.adapter:FlaxAdapter",
    train="alexnet_parity.jax_impl.train", autodiff=True,
    imports=("jaxlib", "optax"),
    threads="alexnet_parity.jax_impl.threads:set_threads")
