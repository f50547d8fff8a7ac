"""Gradients by torch.autograd, for the gradient parity suite (parity_tests/grad.py)."""
from __future__ import annotations

import numpy as np
import torch

from alexnet_parity.common import Spec

from .model import build_model
from .run import activations, full_fp32, torch_device


def run_gradients(spec: Spec, weights: dict, x_nchw: np.ndarray, cotangent: np.ndarray, device: str = "cpu",
                  dtype: str = "float32") -> dict[str, dict[str, np.ndarray]]:
    """Build `spec` with canonical `weights` in `dtype` on `device`, run eval mode on the NCHW batch, and
    differentiate L = sum(cotangent * output). Returns numpy in the canonical layout (torch's own):
    "gradients": dL/d input ("input"), dL/d every named layer's output, dL/d every canonical weight;
    "activations": the forward's every named layer output (its ReLU signs and pool maxima are the routing)."""
    dev = torch_device(device)
    model = build_model(spec, weights, **({} if dtype == "float32" else {"dtype": dtype})).to(dev).eval()
    params = dict(model.named_parameters())
    real = next(iter(params.values())).dtype
    x = torch.from_numpy(np.ascontiguousarray(x_nchw)).to(dev, real).requires_grad_(True)
    with full_fp32():
        acts = activations(model, x)  # clones before each in-place layer, so every output stays as computed
        out = acts[spec.layers[-1].name]
        loss = (out * torch.from_numpy(np.asarray(cotangent)).to(dev, out.dtype)).sum()
        names = ["input", *acts, *params]
        grads = torch.autograd.grad(loss, [x, *acts.values(), *params.values()])

    def numpy(t):  # numpy has no bfloat16: reduced precisions come back as float32
        return t.detach().cpu().to(torch.float64 if t.dtype == torch.float64 else torch.float32).numpy()

    return {"gradients": {name: numpy(g) for name, g in zip(names, grads)},
            "activations": {name: numpy(a) for name, a in acts.items()}}
