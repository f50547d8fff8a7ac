"""Does an array follow an init rule? One set of statistical checks for numpy's init_weights and for each
framework's native init. Tolerances are several standard errors wide (they do not flake) yet a wrong rule
(std 0.01 vs 0.005, truncated vs plain normal, another uniform bound) fails on any layer large enough to tell."""
from __future__ import annotations

import math

import numpy as np

from alexnet_parity.common import Init, Spec, init_bounds, truncated_normal_std


def init_problems(values: np.ndarray, init: Init, fan_in: int, fan_out: int) -> list[str]:
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if init.kind == "constant":
        return [] if np.all(v == np.float32(init.value)) else [f"not all {init.value:g}"]
    if init.kind == "normal":
        std = init.value
    elif init.kind == "truncated_normal":
        std = truncated_normal_std(init.value)
    else:
        bound = init_bounds(init, fan_in, fan_out)
        std = bound / math.sqrt(3)
    problems = []
    if abs(v.mean()) > 6 * std / math.sqrt(n):
        problems.append(f"mean {v.mean():.3g}, expected 0")
    if abs(v.std() - std) > max(6 * std / math.sqrt(2 * n), 0.03 * std):
        problems.append(f"std {v.std():.4g}, expected {std:.4g}")
    biggest = np.abs(v).max()
    if init.kind == "truncated_normal" and biggest > 2 * init.value * (1 + 1e-6):
        problems.append(f"|max| {biggest:.3g} beyond the 2-std cut {2 * init.value:.3g}")
    if init.kind == "normal" and n > 10_000 and biggest < 3 * init.value:
        problems.append(f"|max| {biggest:.3g}: no tail beyond 3 std, not a plain normal")
    if init.kind in ("fan_in_uniform", "glorot_uniform"):
        if biggest > bound * (1 + 1e-6):
            problems.append(f"|max| {biggest:.3g} beyond the bound {bound:.3g}")
        if n >= 100 and biggest < 0.8 * bound:
            problems.append(f"|max| {biggest:.3g} far inside the bound {bound:.3g}")
    return problems


def spec_init_problems(spec: Spec, weights: dict) -> list[str]:
    """Every tensor of `weights` checked against its layer's rule, as 'conv1.weight (rule): problem' lines."""
    out = []
    for layer in spec.param_layers:
        for part in ("weight", "bias"):
            init = getattr(layer, f"{part}_init")
            for problem in init_problems(weights[f"{layer.name}.{part}"], init, layer.fan_in, layer.fan_out):
                out.append(f"{layer.name}.{part} ({init}): {problem}")
    return out
