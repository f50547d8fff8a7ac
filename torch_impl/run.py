"""Every named activation, and the one-call parity entry point the suite uses on each device."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from alexnet_parity.common import Spec
from alexnet_parity.common.dtypes import check_dtype, output_dtype

from .model import build_model, torch_dtype, unwrap


def devices() -> list[str]:
    """The devices this torch can run on, by the parity suite's names."""
    return ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


def torch_device(device: str) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no GPU (torch.cuda.is_available() is False)")
        return torch.device("cuda")
    raise ValueError(f"unknown device {device!r}; choose one of: {', '.join(devices())}")


def activations(model: nn.Module, x: torch.Tensor, *, training: bool = False) -> dict[str, torch.Tensor]:
    """Run the model once and return every named layer's output (NCHW maps, (N, F) after flatten).
    training=True runs training mode (dropout active); the model's own mode is restored afterwards."""
    net = unwrap(model)
    x = torch.as_tensor(x, device=next(net.parameters()).device)
    if x.shape[1:] != net.spec.input_shape:
        net(x)  # raises the model's own message about the input shape
    was_training = net.training
    net.train(training)
    outputs = {}
    try:
        for name, module in net.named_children():
            if getattr(module, "inplace", False):  # in-place ReLU and LRN would overwrite the recorded input
                x = x.clone()
            x = module(x)
            outputs[name] = x
    finally:
        net.train(was_training)
    return outputs


@contextmanager
def full_fp32():
    """No TF32 on GPU while inside: per-layer parity at 1e-5 needs true float32 matmuls and convs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_activations(spec: Spec, weights: dict, x_nchw: np.ndarray, device: str = "cpu",
                    dtype: str = "float32") -> dict[str, np.ndarray]:
    """Build `spec` with canonical `weights` in `dtype` on `device` ("cpu" or "gpu"), run eval mode on the
    NCHW batch (cast to dtype), and return every activation as numpy in the canonical layout (torch's own):
    float64 for a float64 model, else float32."""
    dtype = check_dtype(dtype)
    dev = torch_device(device)
    model = build_model(spec, weights, dtype=dtype).to(dev).eval()
    x = torch.from_numpy(np.ascontiguousarray(x_nchw, dtype=np.float32)).to(dev, torch_dtype(dtype))
    with full_fp32(), torch.inference_mode():
        acts = activations(model, x)
    out = torch_dtype(output_dtype(dtype).__name__)
    return {name: a.to("cpu", out).numpy() for name, a in acts.items()}
