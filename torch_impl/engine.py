"""torch_impl's record in the engine registry (common.engines). Plain data: reading it imports no torch."""
from alexnet_parity.common.engines import BenchPath, Engine

ENGINE = Engine(
    name="torch", package="alexnet_parity.torch_impl", requires=("torch",), extra="torch",
    formats=("torch", "torchvision"), suffix=".pt", layout="NCHW",
    dtypes=("float32", "float64", "bfloat16", "float16"), color="tab:red",
    bench_paths=(BenchPath("eager", "torch eager (inference_mode)", "#e6550d"),
                 BenchPath("compile", "torch.compile (inductor)", "#a63603")),
    runner="alexnet_parity.torch_impl.bench:TorchRunner",
    adapter="alexnet_parity.torch_impl.adapter:TorchAdapter",
    train="alexnet_parity.torch_impl.train", autodiff=True,
    threads="alexnet_parity.torch_impl.threads:set_threads")
