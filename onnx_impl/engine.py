"""onnx_impl's record in the engine registry (common.engines): the spec's ONNX graph run by ONNX Runtime.
Plain data: reading it imports neither onnx nor onnxruntime."""
from alexnet_parity.common.engines import Engine

ENGINE = Engine(
    name="onnxruntime", package="alexnet_parity.onnx_impl", requires=("onnx", "onnxruntime"), extra="onnx",
    formats=("onnx",), suffix=".onnx", layout="NCHW", color="tab:purple",
    threads="alexnet_parity.onnx_impl.threads:set_threads")
