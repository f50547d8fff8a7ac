"""Framework-neutral gradient parity harness, shared by parity_tests/test_grad.py and `alexnet parity --grad`.

For one config and one engine with autodiff: the engine differentiates L = sum(c * output) for a fixed
cotangent c (common.backward.output_cotangent) on the parity weights and input (parity_tests.core); the
float64 reference backward follows the engine's own routing at the near-tie elements (its ReLU signs, its
window argmax, read from the activations of the same forward), and every gradient is measured as
max|engine - ref| / max|ref|: the input's, every named layer output's and every weight's.

The tolerance. Measured over every config of the suite (parity_tests.core.configs(), batch 2) on CPU float32,
torch, Keras on its TensorFlow, JAX and torch backends, and Flax: the worst gradient error of all is 4.5e-6
(keras-torch, single-column/10cls, fc7.weight; the usual worst is conv1.weight at 1-2e-6, its sums the longest), the
forward's own worst 3.6e-6 (docs/parity.md). GRAD_TOLERANCE = 1e-5, the forward gate's figure, leaves a 2.2x margin
over the worst measured, while every
broken backward of parity_tests/test_grad.py misses by 0.5 or more at its layer; the routing itself is bounded by the forward gate
(common.backward.NEAR_TIE_RTOL = 1e-5), which run_grad_parity checks first on the same forward.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from alexnet_parity.common import get_spec, reference_forward
from alexnet_parity.common.backward import gradient_errors, layer_at_fault, output_cotangent, reference_backward
from alexnet_parity.common.engines import differentiable, get_engine

from .core import TOLERANCE, config_id, parity_input, parity_weights, rel_err

GRAD_TOLERANCE = 1e-5


@dataclass
class GradResult:
    variant: str
    overrides: dict
    engine: str
    device: str
    errors: dict[str, float] = field(default_factory=dict)  # "input" / layer name / weight name -> err
    forward: dict[str, float] = field(default_factory=dict)  # layer -> the same forward's error
    near_ties: dict[str, int] = field(default_factory=dict)  # ReLU/pool -> near-tie elements/windows
    rerouted: dict[str, int] = field(default_factory=dict)  # ReLU/pool -> where the engine took the other side
    seconds: float = 0.0  # the engine's forward and backward, building included

    @property
    def id(self) -> str:
        return config_id(self.variant, self.overrides)

    def worst(self) -> tuple[float, str]:
        """The largest gradient error and its tensor (NaN counts as the worst)."""
        name = max(self.errors, key=lambda k: np.inf if np.isnan(self.errors[k]) else self.errors[k])
        return self.errors[name], name

    def at_fault(self, tolerance: float = GRAD_TOLERANCE) -> str | None:
        """The layer whose backward is wrong (common.backward.layer_at_fault), or None."""
        return layer_at_fault(get_spec(self.variant, **self.overrides), self.errors, tolerance)

    def to_dict(self) -> dict:
        worst, where = self.worst()
        return {"variant": self.variant, "overrides": self.overrides, "engine": self.engine, "device": self.device,
                "max_error": worst, "worst_tensor": where, "errors": self.errors, "forward": self.forward,
                "near_ties": self.near_ties, "rerouted": self.rerouted, "seconds": round(self.seconds, 2)}


def run_grad_parity(variant: str, overrides: dict | None = None, *, engine: str, device: str = "cpu",
                    batch: int = 2, seed: int = 0) -> GradResult:
    """One config through one engine's autodiff and the float64 backward on the engine's routing."""
    overrides = dict(overrides or {})
    spec = get_spec(variant, **overrides)
    record = get_engine(engine, "engine", among=differentiable())
    weights = parity_weights(spec, seed)
    x = parity_input(spec, batch, seed + 1)
    cotangent = output_cotangent(spec, batch, seed)
    started = time.perf_counter()
    out = record.run_gradients(spec, weights, x, cotangent, device=device)
    seconds = time.perf_counter() - started
    acts, grads = out["activations"], out["gradients"]
    ref_acts = reference_forward(spec, weights, x)
    missing = [name for name in ["input", *ref_acts, *spec.weight_shapes()] if name not in grads]
    missing += [f"activation {name}" for name in ref_acts if name not in acts]
    if missing:
        raise AssertionError(f"{engine}.run_gradients gave no {missing[0]}")
    ref = reference_backward(spec, weights, x, cotangent, routing=acts, acts=ref_acts)
    return GradResult(variant, overrides, engine, device, errors=gradient_errors(spec, ref, grads),
                      forward={name: rel_err(acts[name], ref_acts[name], ref_acts[name]) for name in ref_acts},
                      near_ties=ref.near_ties.counts(), rerouted=dict(ref.rerouted), seconds=seconds)


def grad_failures(result: GradResult, tolerance: float = GRAD_TOLERANCE) -> list[str]:
    """Every gradient over the tolerance, and every forward layer over the forward gate (the routing is read
    from that forward, and the near ties assume it holds); NaN fails."""
    bad = [f"{result.engine} forward {name}: {err:.2e} > {TOLERANCE:g}"
           for name, err in result.forward.items() if not err <= TOLERANCE]
    bad += [f"{result.engine} d/d {name}: {err:.2e} > {tolerance:g}"
            for name, err in result.errors.items() if not err <= tolerance]
    fault = result.at_fault(tolerance)
    return bad + ([f"{result.engine}: layer at fault {fault}"] if fault and bad else [])
