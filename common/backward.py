"""The float64 numpy backward of any spec: the oracle every engine's gradients are measured against.

Each op's vector-Jacobian product is written from its definition, on the geometry the spec resolved
(explicit (before, after) pads, the forward's own windows), so the backward never recomputes geometry.

Routing. ReLU and max pool are not differentiable at a tie: a ReLU input of exactly 0, a window with two
equal maxima. Float32 engines see a float64 near-tie as whichever side their rounding puts it on, and
each answer is a correct gradient at the engine's own forward values. `find_near_ties` marks the
elements where that can happen; `reference_backward(..., routing=engine_activations)` then takes the
engine's own decisions at exactly those elements (its ReLU signs, its window argmax) and the float64
ones everywhere else, so the engine's gradient can be compared strictly.

An engine adapter, with its activations and gradients as numpy in canonical layout (NCHW maps, C,H,W flatten,
reference_forward's layer names, canonical weight names):

    c = output_cotangent(spec, len(x))                  # the engine differentiates L = sum(c * its output)
    ref = reference_backward(spec, weights, x, c, routing=engine_activations)
    errs = gradient_errors(spec, ref, engine_grads)     # {"input": ..., "conv1": ..., "conv1.weight": ...}
    layer_at_fault(spec, errs, tolerance)               # None, or the layer whose backward is wrong
    ref.near_ties.counts(), ref.rerouted                # the near ties, and where the engine took the other side
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .geometry import adaptive_pool_matrix
from .layers import LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, Layer, MaxPool, ReLU
from .reference import _windows, channel_window_sum, lrn_denominator, reference_forward
from .spec import Spec

# An engine that passes the forward gate (max|engine - ref| <= 1e-5 * max|ref| per layer) can flip a ReLU
# only where |ref input| <= 1e-5 * scale, and a pool's argmax only where the window's two largest differ by
# at most twice that: so the forward gate itself bounds the elements an engine may route differently.
NEAR_TIE_RTOL = 1e-5


# --- one vector-Jacobian product per op --------------------------------------------------------------
# Each takes the layer's input x (and its output y where that is cheaper), the gradient g of its output,
# and returns the gradient of its input (and, for conv and dense, of weight and bias).

def conv_vjp(x, weight, g, layer: Conv):
    """out[n,o,i,j] = sum_{c,p,q} xpad[n, c, i*s+p, j*s+q] w[o,c,p,q] + b[o], per group."""
    win = _windows(x, layer, 0.0)  # (N, C, OH, OW, k, k), the forward's own view
    (top, bottom), (left, right) = layer.padding
    n, c, h, w = x.shape
    k, s, groups = layer.kernel, layer.stride, layer.groups
    cin, cout = weight.shape[1], weight.shape[0] // groups
    oh, ow = g.shape[2:]
    gx = np.zeros((n, c, h + top + bottom, w + left + right))
    gw = np.empty_like(weight, dtype=np.float64)
    for grp in range(groups):
        gg = g[:, grp * cout:(grp + 1) * cout]  # (N, cout, OH, OW)
        wg = weight[grp * cout:(grp + 1) * cout]  # (cout, cin, k, k)
        gw[grp * cout:(grp + 1) * cout] = np.tensordot(gg, win[:, grp * cin:(grp + 1) * cin],
                                                       axes=([0, 2, 3], [0, 2, 3]))
        cols = np.tensordot(gg, wg, axes=([1], [0]))  # (N, OH, OW, cin, k, k): what each window position receives
        for p in range(k):
            for q in range(k):
                gx[:, grp * cin:(grp + 1) * cin, p:p + s * (oh - 1) + 1:s, q:q + s * (ow - 1) + 1:s] += \
                    cols[..., p, q].transpose(0, 3, 1, 2)
    return gx[:, :, top:top + h, left:left + w], gw, g.sum(axis=(0, 2, 3))


def dense_vjp(x, weight, g):
    """y = x W^T + b."""
    return g @ weight, g.T @ x, g.sum(axis=0)


def relu_vjp(x, g, passes=None):
    """passes: where the gradient goes through; x > 0 (the float64 decision) unless given."""
    return g * (x > 0 if passes is None else passes)


def lrn_vjp(x, g, layer: LRN):
    """b_c = a_c D_c^-beta, D_c = k + s sum_{j in win(c)} a_j^2, so
    dL/da_j = g_j D_j^-beta - 2 beta s a_j sum_{c: j in win(c)} g_c a_c D_c^(-beta-1):
    the second term is the cross-channel one; the c with j in win(c) are win(j) mirrored."""
    d = lrn_denominator(x, layer)
    half = layer.size // 2
    t = g * x * d ** (-layer.beta - 1.0)
    cross = channel_window_sum(t, layer.size, layer.size - 1 - half)
    return g * d ** -layer.beta - 2.0 * layer.beta * layer.scale * x * cross


def window_argmax(x, layer: MaxPool):
    """(N, C, OH, OW) index p*k+q of each window's maximum (the first on exact ties), -inf padding."""
    win = _windows(x, layer, -np.inf)
    return win.reshape(*win.shape[:4], -1).argmax(axis=-1)


def max_pool_vjp(x, g, layer: MaxPool, argmax=None):
    """The gradient of each window goes to its maximum: argmax (p*k+q per window) or the float64 one."""
    if argmax is None:
        argmax = window_argmax(x, layer)
    (top, bottom), (left, right) = layer.padding
    n, c, h, w = x.shape
    k, s = layer.kernel, layer.stride
    oh, ow = g.shape[2:]
    gx = np.zeros((n, c, h + top + bottom, w + left + right))
    for p in range(k):
        for q in range(k):
            gx[:, :, p:p + s * (oh - 1) + 1:s, q:q + s * (ow - 1) + 1:s] += np.where(argmax == p * k + q, g, 0.0)
    return gx[:, :, top:top + h, left:left + w]


def adaptive_avg_pool_vjp(x, g, layer: AdaptiveAvgPool):
    """y = M_h x M_w^T per channel, so dL/dx = M_h^T g M_w."""
    mh = adaptive_pool_matrix(x.shape[2], layer.output_size, np.float64)
    mw = adaptive_pool_matrix(x.shape[3], layer.output_size, np.float64)
    return np.einsum("oh,ncop,pw->nchw", mh, g, mw)


# --- near ties and routing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class NearTies:
    """Where a float32 engine may route a gradient differently from the float64 reference, and still be right.
    relu: ReLU name -> bool mask (the ReLU's shape): |input| <= rtol * max|input|.
    pool: max-pool name -> bool mask (the pool's output shape): the window's two largest values differ by at
    most 2 * rtol * max|pool input|, leaving out windows whose candidates are all ReLU zeros of clearly negative
    inputs (their gradient dies below whichever one receives it)."""

    rtol: float
    relu: dict[str, np.ndarray] = field(default_factory=dict)
    pool: dict[str, np.ndarray] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Near-tie elements (ReLU) or windows (pool) per layer, in layer order, zeros included."""
        return {name: int(mask.sum()) for name, mask in {**self.relu, **self.pool}.items()}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


def _scale(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def find_near_ties(spec: Spec, acts: Mapping[str, np.ndarray], x: np.ndarray, rtol: float = NEAR_TIE_RTOL) -> NearTies:
    """The near-tie elements of a float64 forward (`acts` from reference_forward(spec, weights, x)) for an
    engine whose activations are within rtol * max|ref| of the reference's, layer by layer."""
    ties = NearTies(rtol)
    below = np.asarray(x, dtype=np.float64)
    dead = None  # exact zeros made by a ReLU from an input clearly below 0: gradient sent there is lost
    for layer in spec.layers:
        if isinstance(layer, ReLU):
            tie = np.abs(below) <= rtol * _scale(below)
            ties.relu[layer.name] = tie
            dead = (below <= 0) & ~tie
        elif isinstance(layer, MaxPool):
            win = _windows(below, layer, -np.inf)
            win = win.reshape(*win.shape[:4], -1)
            gap = 2.0 * rtol * _scale(below)
            top2 = -np.partition(-win, 1, axis=-1)[..., :2]
            tie = top2[..., 0] - top2[..., 1] <= gap
            candidates = win >= top2[..., :1] - gap
            if dead is not None:
                dwin = _windows(dead, layer, True)
                dwin = dwin.reshape(*dwin.shape[:4], -1)
                tie &= ~np.all(dwin | ~candidates, axis=-1)
                dead = np.all(dwin | ~candidates, axis=-1)  # the output is a dead zero iff every candidate is
            ties.pool[layer.name] = tie
        elif isinstance(layer, Flatten) and dead is not None:
            dead = dead.reshape(dead.shape[0], -1)
        elif not isinstance(layer, (LRN, Dropout)):  # LRN maps zero to zero, position by position
            dead = None
        below = acts[layer.name]
    return ties


@dataclass(frozen=True)
class Routing:
    """An engine's own decisions, everywhere; the backward reads them only at near-tie elements.
    relu: ReLU name -> bool mask, True where the engine's ReLU passes the gradient (its output > 0).
    pool: max-pool name -> int array (pool output shape), the flat index p*k+q of the engine's window maximum."""

    relu: dict[str, np.ndarray] = field(default_factory=dict)
    pool: dict[str, np.ndarray] = field(default_factory=dict)


def routing_from_activations(spec: Spec, acts: Mapping[str, np.ndarray], x: np.ndarray | None = None) -> Routing:
    """An engine's decisions from its forward activations (numpy, canonical NCHW, reference_forward's names):
    each ReLU's output sign, each max pool's window argmax over the engine's own pool input (the first
    maximum on exact ties, as the engines' max-pool gradients pick it). x: the engine's input, needed only
    when a pool is the first layer."""
    routing = Routing()
    names = ["input"] + [layer.name for layer in spec.layers]
    for i, layer in enumerate(spec.layers):
        if not isinstance(layer, (ReLU, MaxPool)):
            continue
        source = layer.name if isinstance(layer, ReLU) else names[i]  # a pool reads the layer below it
        a = x if source == "input" else acts.get(source)
        if a is None:
            raise ValueError(f"routing: the engine's activations lack {source!r}, needed for {layer.name}'s decisions")
        a = np.asarray(a, dtype=np.float64)
        want = layer.out_shape if isinstance(layer, ReLU) else layer.in_shape
        if a.shape[1:] != want:
            raise ValueError(f"routing: activation {source!r} has shape {a.shape}, expected (N, "
                             f"{', '.join(map(str, want))}), NCHW")
        if isinstance(layer, ReLU):
            routing.relu[layer.name] = a > 0
        else:
            routing.pool[layer.name] = window_argmax(a, layer)
    return routing


# --- the whole network ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Gradients:
    """float64 gradients of L = sum(grad_output * output): input (N, C, H, W); activations: layer name ->
    dL/d(that layer's output), reference_forward's names and shapes; weights: canonical name -> gradient in
    canonical layout. near_ties and rerouted (layer -> elements where the engine decided otherwise than the
    float64 forward) are set when the backward followed an engine's routing."""

    input: np.ndarray
    activations: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    near_ties: NearTies | None = None
    rerouted: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, np.ndarray]:
        """'input', every layer name and every weight name in one dict: the form gradient_errors reads."""
        return {"input": self.input, **self.activations, **self.weights}


def output_cotangent(spec: Spec, batch: int, seed: int = 0) -> np.ndarray:
    """A fixed float64 grad_output for (batch, *spec.output_shape): the scalar an engine differentiates is
    L = sum(cotangent * output), the same for every engine, linear so its gradient is exactly this array."""
    return np.random.default_rng(seed).standard_normal((batch, *spec.output_shape))


def reference_backward(spec: Spec, weights: dict, x: np.ndarray, grad_output: np.ndarray, *,
                       routing: Routing | Mapping[str, np.ndarray] | None = None, rtol: float = NEAR_TIE_RTOL,
                       acts: Mapping[str, np.ndarray] | None = None) -> Gradients:
    """The float64 gradients of L = sum(grad_output * last activation) for an NCHW batch x, in eval mode.
    routing: an engine's Routing, or its forward activations (dict name -> NCHW numpy array, as
    reference_forward names them) to read it from; followed only at find_near_ties(..., rtol) elements.
    acts: reference_forward(spec, weights, x), when the caller has it already."""
    x = np.asarray(x, dtype=np.float64)
    if acts is None:
        acts = reference_forward(spec, weights, x)  # checks x and the weights
    else:
        if x.ndim != 4 or x.shape[1:] != spec.input_shape:
            raise ValueError(f"input has shape {x.shape}; {spec.describe()} takes (N, "
                             f"{', '.join(map(str, spec.input_shape))}) NCHW")
        spec.check_weights(weights)
        missing = [layer.name for layer in spec.layers if layer.name not in acts]
        if missing:
            raise ValueError(f"acts: no activation {missing[0]!r}; pass reference_forward(spec, weights, x)")
    w64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    g = np.asarray(grad_output, dtype=np.float64)
    expected = (x.shape[0], *spec.output_shape)
    if g.shape != expected:
        raise ValueError(f"grad_output has shape {g.shape}; {spec.describe()} with batch {x.shape[0]} "
                         f"outputs {expected}")
    ties, rerouted = None, {}
    if routing is not None:
        if not isinstance(routing, Routing):
            routing = routing_from_activations(spec, routing, x)
        ties = find_near_ties(spec, acts, x, rtol)
    grads_act: dict[str, np.ndarray] = {}
    grads_w: dict[str, np.ndarray] = {}
    names = [layer.name for layer in spec.layers]
    for i in range(len(spec.layers) - 1, -1, -1):
        layer = spec.layers[i]
        grads_act[layer.name] = g
        below = acts[names[i - 1]] if i > 0 else x
        g = _layer_vjp(layer, below, g, w64, grads_w, routing, ties, rerouted)
    return Gradients(input=g, activations={n: grads_act[n] for n in names},
                     weights={k: grads_w[k] for k in spec.weight_shapes()}, near_ties=ties, rerouted=rerouted)


def _layer_vjp(layer: Layer, x, g, w64, grads_w, routing, ties, rerouted):
    if isinstance(layer, Conv):
        gx, gw, gb = conv_vjp(x, w64[f"{layer.name}.weight"], g, layer)
        grads_w[f"{layer.name}.weight"], grads_w[f"{layer.name}.bias"] = gw, gb
        return gx
    if isinstance(layer, Dense):
        gx, gw, gb = dense_vjp(x, w64[f"{layer.name}.weight"], g)
        grads_w[f"{layer.name}.weight"], grads_w[f"{layer.name}.bias"] = gw, gb
        return gx
    if isinstance(layer, ReLU):
        passes = x > 0
        if routing is not None:
            tie = ties.relu[layer.name]
            engine = _decisions(routing.relu, layer.name, passes.shape)
            rerouted[layer.name] = int((tie & (engine != passes)).sum())
            passes = np.where(tie, engine, passes)
        return relu_vjp(x, g, passes)
    if isinstance(layer, LRN):
        return lrn_vjp(x, g, layer)
    if isinstance(layer, MaxPool):
        argmax = window_argmax(x, layer)
        if routing is not None:
            tie = ties.pool[layer.name]
            engine = _decisions(routing.pool, layer.name, argmax.shape)
            rerouted[layer.name] = int((tie & (engine != argmax)).sum())
            argmax = np.where(tie, engine, argmax)
        return max_pool_vjp(x, g, layer, argmax)
    if isinstance(layer, AdaptiveAvgPool):
        return adaptive_avg_pool_vjp(x, g, layer)
    if isinstance(layer, Flatten):
        return g.reshape(x.shape)  # the forward's C,H,W reshape, undone
    if isinstance(layer, Dropout):
        return g  # inference: the identity
    raise TypeError(f"no reference backward for layer kind {layer.kind!r}")


def _decisions(table: Mapping[str, np.ndarray], name: str, shape) -> np.ndarray:
    if name not in table:
        raise ValueError(f"routing: no decisions for {name}")
    d = np.asarray(table[name])
    if d.shape != shape:
        raise ValueError(f"routing: decisions for {name} have shape {d.shape}, the reference's are {shape}")
    return d


# --- comparing an engine's gradients ---------------------------------------------------------------------

def gradient_errors(spec: Spec, ref: Gradients, grads: Mapping[str, np.ndarray]) -> dict[str, float]:
    """max|a - ref| / max|ref| for each gradient an engine gives: keys 'input', layer names (the gradient of
    that layer's output) and canonical weight names, canonical layout; missing keys are left out."""
    table = ref.as_dict()
    errs = {}
    for name, r in table.items():
        if name in grads:
            a = np.asarray(grads[name], dtype=np.float64)
            if a.shape != r.shape:
                raise ValueError(f"gradient {name!r} has shape {a.shape}, the reference's is {r.shape}")
            scale = _scale(r)
            errs[name] = float(np.abs(a - r).max()) / (scale if scale > 0 else 1.0)
    return errs


def layer_at_fault(spec: Spec, errors: Mapping[str, float], tolerance: float) -> str | None:
    """The layer whose backward is wrong: walking from the output down, the first layer whose output gradient
    meets the tolerance while its input gradient or its weight gradients do not (NaN fails). Where the engine
    reported no gradient for some layers' outputs, the span 'lowest..highest' that must hold the fault (the
    output's own gradient is the cotangent, known to both). The last layer's name when the reported gradient
    of the output itself differs; None when nothing fails."""
    def bad(name):
        return name in errors and not errors[name] <= tolerance

    layers = spec.layers
    if bad(layers[-1].name):
        return layers[-1].name
    good = len(layers) - 1  # the lowest layer whose output gradient is known to be right
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if layer.name in errors:
            good = i
        below = layers[i - 1].name if i > 0 else "input"
        params = [f"{layer.name}.weight", f"{layer.name}.bias"] if layer.has_params else []
        if bad(below) or any(bad(p) for p in params):
            return layer.name if good == i else f"{layer.name}..{layers[good].name}"
    return None
