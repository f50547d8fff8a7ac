"""Any resolved AlexNet spec as a torch.nn.Module (NCHW), its native init, and canonical weights in and out.

The module's children carry the spec's layer names (conv1, relu1, norm1, pool1, ..., fc8), so
`model.state_dict()` keys are the canonical weight names ("conv1.weight", ..., "fc8.bias") and
torch's layout *is* the canonical layout: a state_dict is a canonical checkpoint.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from alexnet_parity.common import (LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, Init, Layer, MaxPool,
                                   ReLU, Spec, init_bounds)
from alexnet_parity.common.dtypes import check_dtype

from .layers import LocalResponseNorm, make_conv, make_max_pool


def make_layer(layer: Layer, device=None) -> nn.Module:
    """The torch module for one resolved spec layer."""
    if isinstance(layer, Conv):
        return make_conv(layer, device=device)
    if isinstance(layer, ReLU):
        return nn.ReLU(inplace=True)
    if isinstance(layer, LRN):
        return LocalResponseNorm(layer, inplace=True)  # its input (a ReLU's or a pool's output) is used once
    if isinstance(layer, MaxPool):
        return make_max_pool(layer)
    if isinstance(layer, AdaptiveAvgPool):
        return nn.AdaptiveAvgPool2d(layer.output_size)  # the spec's bins are PyTorch's by definition
    if isinstance(layer, Flatten):
        return nn.Flatten()  # C,H,W order: the order canonical fc6 weights use
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate)
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features, device=device)
    raise TypeError(f"no torch module for layer kind {layer.kind!r}")


class AlexNet(nn.Sequential):
    """One AlexNet spec, layer by layer, under the spec's layer names. `self.spec` says which one.
    Use build_model(spec) to get one initialised by the variant's rule or loaded from weights; this
    constructor alone leaves torch's default init."""

    def __init__(self, spec: Spec, device=None):
        super().__init__(OrderedDict((layer.name, make_layer(layer, device)) for layer in spec.layers))
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != self.spec.input_shape:
            raise ValueError(f"input has shape {tuple(x.shape)}; {self.spec.describe()} takes "
                             f"(N, {', '.join(map(str, self.spec.input_shape))}) NCHW")
        return super().forward(x)

    def extra_repr(self) -> str:
        return self.spec.describe()


def unwrap(model: nn.Module) -> AlexNet:
    """The AlexNet inside a torch.compile wrapper (whose state_dict keys gain an `_orig_mod.` prefix) or a
    DistributedDataParallel / DataParallel one (`module.`), or both."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model) if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model
    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, AlexNet):
        raise TypeError(f"expected a torch_impl AlexNet, got {type(model).__name__}")
    return model


def _truncated_normal_(tensor: torch.Tensor, std: float, generator) -> None:
    """N(0, std) cut at 2 std by redrawing the draws outside, as TF and Keras truncate. Same law as
    nn.init.trunc_normal_, whose inverse-CDF method takes ~8x longer (2 s for slim's fc6 here)."""
    flat = tensor.view(-1).normal_(0.0, 1.0, generator=generator)
    redraw = (flat.abs() > 2.0).nonzero().squeeze(1)
    while redraw.numel():
        flat[redraw] = torch.randn(redraw.numel(), generator=generator, dtype=flat.dtype)
        redraw = redraw[flat[redraw].abs() > 2.0]
    flat.mul_(std)


@torch.no_grad()
def _draw(tensor: torch.Tensor, init: Init, fan_in: int, fan_out: int, generator) -> None:
    if init.kind == "constant":
        tensor.fill_(init.value)
    elif init.kind == "normal":
        nn.init.normal_(tensor, 0.0, init.value, generator=generator)
    elif init.kind == "truncated_normal":
        _truncated_normal_(tensor, init.value, generator)
    elif init.kind in ("fan_in_uniform", "glorot_uniform"):
        # the bounds nn.Conv2d/nn.Linear's defaults and nn.init.xavier_uniform_ use, from one formula
        bound = init_bounds(init, fan_in, fan_out)
        nn.init.uniform_(tensor, -bound, bound, generator=generator)
    else:
        raise ValueError(f"unknown init rule {init.kind!r}")


def init_native(model: nn.Module, seed: int | None = None) -> None:
    """Redraw every weight by the variant's rule with torch's RNG: a Generator seeded with `seed`,
    else torch's global RNG. Layers are drawn in order, weight before bias."""
    model = unwrap(model)
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    for layer in model.spec.param_layers:
        module = model.get_submodule(layer.name)
        for tensor, init in ((module.weight, layer.weight_init), (module.bias, layer.bias_init)):
            if tensor.device.type == "cpu":
                _draw(tensor, init, layer.fan_in, layer.fan_out, generator)
            else:  # a CPU generator keeps a seed's draws the same on every device
                cpu = torch.empty(tensor.shape, dtype=tensor.dtype)
                _draw(cpu, init, layer.fan_in, layer.fan_out, generator)
                with torch.no_grad():
                    tensor.copy_(cpu)


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype of a name of common.dtypes.DTYPES ("float32", "float64", "bfloat16", "float16")."""
    return getattr(torch, check_dtype(dtype))


def build_model(spec: Spec, weights: dict | None = None, *, seed: int | None = None,
                dtype="float32") -> AlexNet:
    """The torch module for `spec`: with canonical `weights` loaded exactly, or else drawn by the
    variant's own init rule (seeded by `seed`, else torch's global RNG). dtype: its parameters' and
    computation's type, "float32" (default), "float64", "bfloat16" or "float16"; the weights are loaded
    or drawn in float32 and then cast, so a seed draws the same model, rounded, in every dtype."""
    dtype = torch_dtype(dtype)
    from alexnet_parity.weights_convert.pretrained import resolve_weights  # weights="bvlc_alexnet": the cache
    weights = resolve_weights(weights, spec)
    model = AlexNet(spec, device="meta")  # no memory and no default init for what is drawn or loaded next
    model.to_empty(device="cpu")
    if weights is None:
        init_native(model, seed)
    else:
        load_weights(model, weights)
    return model if dtype == torch.float32 else model.to(dtype)


def load_weights(model: nn.Module, weights: dict) -> None:
    """Copy canonical weights (name -> array) into the model: exactly into a float32 or float64 model, rounded
    to nearest into a bfloat16 or float16 one."""
    model = unwrap(model)
    model.spec.check_weights(weights)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def export_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's weights as canonical float32 numpy arrays (copies), in layer order."""
    return {name: p.detach().to("cpu", torch.float32).numpy().copy()
            for name, p in unwrap(model).named_parameters()}
