"""onnx_impl's runner for `alexnet bench` (alexnet_cli.bench_cmd drives it in its worker process): the spec's
own ONNX graph in an ONNX Runtime InferenceSession. Inference only: ONNX Runtime's training lives in a separate
package (onnxruntime-training) that the project does not use, so the engine's bench path declares infer alone
and `alexnet bench --mode train` leaves it out."""
from __future__ import annotations

import os


class OrtRunner:
    """The spec's ModelProto in an InferenceSession with ORT's default graph optimizations, fed and read through
    an IO binding, so that on a GPU the input stays on the device and a step ends when ORT's run (which
    synchronizes) returns."""

    def __init__(self, device: str = "cpu", tf32: str | None = None):
        import onnx
        import onnxruntime as ort

        from alexnet_parity import onnx_impl
        self.ort, self.onnx, self.impl = ort, onnx, onnx_impl
        self.versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
        self.threads = os.cpu_count()  # ORT's default intra-op pool: one thread per core
        self.gpu = device == "gpu"
        self.where = ("cuda", 0) if self.gpu else ("cpu", 0)
        self.tf32 = tf32  # ORT's CUDA EP takes it per session (use_tf32), see _session

    def check_device(self) -> str | None:
        if not self.gpu:
            return None
        if "gpu" not in self.impl.devices():
            raise RuntimeError("ONNX Runtime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
        return "CUDA (ONNX Runtime CUDAExecutionProvider)"

    def _session(self, model):
        if not self.gpu:
            return self.impl.session(model, "cpu")
        return self.ort.InferenceSession(model.SerializeToString(), providers=[
            ("CUDAExecutionProvider", {"use_tf32": int(self.tf32 == "on")}), "CPUExecutionProvider"])

    def build(self, spec, weights):
        # unchecked: onnx.checker and shape inference copy the graph, which is what the bench would then weigh.
        # The session is made in step: its graph optimization is ORT's compile, counted in the first step as
        # torch.compile's and XLA's are.
        return self.impl.build_model(spec, weights, check=False)

    def inputs(self, x, labels):
        return self.ort.OrtValue.ortvalue_from_numpy(x, *self.where), labels

    def _bound(self, sess, feeds: dict):
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, value)
        for out in sess.get_outputs():
            binding.bind_output(out.name, self.where[0], self.where[1])
        return lambda: sess.run_with_iobinding(binding)

    def step(self, model, path, mode, x, y):
        if mode != "infer":  # bench_cmd never asks (the path declares infer only); a direct caller is told
            raise ValueError(f"ONNX Runtime times inference only, not --mode {mode}")
        sess = self._session(model)
        return self._bound(sess, {sess.get_inputs()[0].name: x})

    def matmul(self, n: int):
        import numpy as np
        from onnx import TensorProto, helper

        io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "abc"]
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", io[:2], io[2:])
        sess = self._session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
        rng = np.random.default_rng(0)
        feeds = {name: self.ort.OrtValue.ortvalue_from_numpy(rng.standard_normal((n, n), dtype=np.float32),
                                                             *self.where) for name in "ab"}
        return self._bound(sess, feeds)

    def conversion(self, spec, weights: dict, tmp: str):
        """weights_convert canonical -> onnx (the spec's graph written) against plain onnx.load + onnx.save."""
        import numpy as np

        from alexnet_parity.weights_convert import load, save
        src, dst, plain_in, plain_out = (os.path.join(tmp, n) for n in
                                         ("w.safetensors", "w.onnx", "plain.onnx", "plain2.onnx"))
        save(src, spec, weights, fmt="canonical")
        self.onnx.save(self.impl.build_model(spec, weights), plain_in)

        def convert():
            spec_in, w = load(src, variant=spec.variant)
            save(dst, spec_in, w, fmt="onnx")

        def plain():
            self.onnx.save(self.onnx.load(plain_in), plain_out)

        def check() -> bool:
            _, back = load(dst)
            return all(np.array_equal(back[k], v) for k, v in weights.items())
        return convert, plain, check, ("weights_convert canonical -> onnx", "plain onnx.load + onnx.save")

    def memory_mb(self) -> float | None:
        """None: on the CPU the bench reads RSS; on a GPU ORT's Python API reports no device memory, so the
        bench's memory columns there are the host's."""
        return None
