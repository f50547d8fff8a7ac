"""onnx_impl's record in the engine registry (common.engines): the spec's ONNX graph run by ONNX Runtime.
Plain data: reading it imports neither onnx nor onnxruntime."""
from alexnet_parity.common.engines import BenchPath, Engine

ENGINE = Engine(
    name="onnxruntime", package="alexnet_parity.onnx_impl", requires=("onnx", "onnxruntime"), extra="onnx",
    formats=("onnx",), suffix=".onnx", layout="NCHW", color="tab:purple",
    dtypes=("float32", "float16"),  # ORT CPU has no float64 or bfloat16 Conv
    bench_paths=(BenchPath("ort", "ONNX Runtime InferenceSession (default graph optimizations)", "#54278f",
                           modes=("infer",)),),  # training is onnxruntime-training's, not installed here
    runner="alexnet_parity.onnx_impl.bench:OrtRunner",
    threads="alexnet_parity.onnx_impl.threads:set_threads")
