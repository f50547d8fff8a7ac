"""ONNX Runtime's threads: a session option, so every session run_activations makes from now on gets it."""
from . import run


def set_threads(n: int) -> int:
    run.THREADS = n
    return run.session_threads(run.session(_probe()))


def _probe():
    """The smallest graph ORT will make a session of, to read back the option it took."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
