"""The float64 reference backward, checked against central finite differences in float64, op by op and on
the whole network of every variant; then near-tie detection, routing, and broken VJPs caught at their layer.

Finite differences: an op's vector-Jacobian product, element by element, by (f(x + h e_i) - f(x - h e_i)) / 2h
on small tensors; the network by directional derivatives (f(x + h d) - f(x - h d)) / 2h against <grad, d>, with a
guard that no ReLU sign or window argmax changes within +-h d (a kink inside the step would make the
difference quotient meaningless, not the gradient wrong). Run with -s to see the worst error of each check.
"""
import dataclasses

import numpy as np
import pytest

from alexnet_parity.common import (LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, MaxPool, ReLU, get_spec,
                                   reference_forward)
from alexnet_parity.common.backward import (NEAR_TIE_RTOL, Routing, adaptive_avg_pool_vjp, conv_vjp, dense_vjp,
                                            find_near_ties, gradient_errors, layer_at_fault, lrn_vjp, max_pool_vjp,
                                            output_cotangent, reference_backward, relu_vjp, routing_from_activations,
                                            window_argmax)
from alexnet_parity.common.reference import apply_layer
from alexnet_parity.common.spec import _resolve_layer
from alexnet_parity.parity_tests.core import parity_input, parity_weights

import alexnet_parity.common.backward as backward

H_OP = 1e-6  # op checks: inputs O(1), so truncation (h^2) and rounding (1e-16/h) both stay near 1e-10
OP_TOL = 1e-8


def fd_jacobian_check(f, x, g, analytic, h=H_OP):
    """Worst |FD - analytic| / max|analytic| over every element of x, for L(x) = sum(g * f(x))."""
    fd = np.empty_like(x)
    flat, out = x.reshape(-1), fd.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = float((g * f(x)).sum())
        flat[i] = keep - h
        down = float((g * f(x)).sum())
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return float(np.abs(fd - analytic).max() / np.abs(analytic).max())


rng = np.random.default_rng(0)


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, ((1, 1), (1, 1))), (2, 2, ((0, 3), (0, 3))),
                                                   (2, 3, ((2, 1), (0, 2))), (1, 4, ((0, 0), (0, 0)))])
def test_conv_vjp_matches_finite_differences(groups, stride, padding):
    x = rng.normal(size=(2, 4, 7, 8))
    w = rng.normal(size=(6, 4 // groups, 3, 3))
    b = rng.normal(size=6)
    layer = Conv("c", out_channels=6, kernel=3, stride=stride, groups=groups, padding=padding)
    y = apply_layer(layer, x, {"c.weight": w, "c.bias": b})
    g = rng.normal(size=y.shape)
    gx, gw, gb = conv_vjp(x, w, g, layer)
    errs = [fd_jacobian_check(lambda t: apply_layer(layer, t, {"c.weight": w, "c.bias": b}), x, g, gx),
            fd_jacobian_check(lambda t: apply_layer(layer, x, {"c.weight": t, "c.bias": b}), w, g, gw),
            fd_jacobian_check(lambda t: apply_layer(layer, x, {"c.weight": w, "c.bias": t}), b, g, gb)]
    print(f"\nconv groups={groups} stride={stride} pads={padding}: h={H_OP:g}, worst x/w/b error "
          + " ".join(f"{e:.1e}" for e in errs))
    assert max(errs) < OP_TOL


def test_dense_relu_flatten_dropout_vjps_match_finite_differences():
    x, w, b = rng.normal(size=(3, 10)), rng.normal(size=(4, 10)), rng.normal(size=4)
    layer = Dense("d", out_features=4, in_features=10)
    g = rng.normal(size=(3, 4))
    gx, gw, gb = dense_vjp(x, w, g)
    weights = {"d.weight": w, "d.bias": b}
    errs = {"dense x": fd_jacobian_check(lambda t: apply_layer(layer, t, weights), x, g, gx),
            "dense w": fd_jacobian_check(lambda t: apply_layer(layer, x, {"d.weight": t, "d.bias": b}), w, g, gw),
            "dense b": fd_jacobian_check(lambda t: apply_layer(layer, x, {"d.weight": w, "d.bias": t}), b, g, gb)}
    a = rng.normal(size=(2, 3, 4, 4))
    a[np.abs(a) < 1e-3] = 0.5  # no input within h of the kink
    ga = rng.normal(size=a.shape)
    errs["relu"] = fd_jacobian_check(lambda t: apply_layer(ReLU("r"), t, {}), a, ga, relu_vjp(a, ga))
    flat = Flatten("f", in_shape=(3, 4, 4), out_shape=(48,))
    gf = rng.normal(size=(2, 48))
    gflat = backward._layer_vjp(flat, a, gf, {}, {}, None, None, {})
    errs["flatten"] = fd_jacobian_check(lambda t: apply_layer(flat, t, {}), a, gf, gflat)
    gdrop = backward._layer_vjp(Dropout("dr"), a, ga, {}, {}, None, None, {})
    errs["dropout"] = fd_jacobian_check(lambda t: apply_layer(Dropout("dr"), t, {}), a, ga, gdrop)
    print("\n" + ", ".join(f"{k}: {v:.1e}" for k, v in errs.items()) + f" (h={H_OP:g})")
    assert max(errs.values()) < OP_TOL
    # C,H,W order: the flattened gradient's element 1 is channel 0, row 0, column 1
    assert gflat[1, 0, 0, 1] == gf[1, 1] and gflat[1, 1, 0, 0] == gf[1, 16]


LRN_RULES = {name: get_spec(name).layer("norm1") for name in ("paper", "caffe", "single-column")}


@pytest.mark.parametrize("rule", [*LRN_RULES, "size4", "strong"])
def test_lrn_vjp_matches_finite_differences(rule):
    if rule == "size4":  # an even window is asymmetric: [c-2, c+1], so its backward window is [c-1, c+2]
        layer = LRN("n", size=4, alpha=0.3, beta=0.75, k=1.0)
    elif rule == "strong":
        layer = LRN("n", size=5, alpha=2.0, beta=1.3, k=0.5, alpha_over_n=False)
    else:
        layer = LRN_RULES[rule]
    x = rng.normal(size=(2, 7, 3, 2))
    if rule in LRN_RULES:
        x *= 50.0  # the spread of mean-subtracted pixels, where alpha=1e-4's sum term is O(1)
    g = rng.normal(size=x.shape)
    gx = lrn_vjp(x, g, layer)
    h = H_OP * (50.0 if rule in LRN_RULES else 1.0)
    err = fd_jacobian_check(lambda t: apply_layer(layer, t, {}), x, g, gx, h=h)
    # the cross-channel term is not negligible here: dropping it is a big error
    without = g * backward.lrn_denominator(x, layer) ** -layer.beta
    miss = float(np.abs(without - gx).max() / np.abs(gx).max())
    print(f"\nlrn {rule} (size {layer.size}, scale {layer.scale:g}, k {layer.k:g}, beta {layer.beta:g}): "
          f"h={h:g}, worst error {err:.1e}; without the cross-channel term {miss:.1e}")
    assert err < OP_TOL and miss > 1e-2


@pytest.mark.parametrize("rounding,pad,size", [("floor", 0, 7), ("ceil", 0, 6), ("ceil", 1, 8), ("floor", 1, 6)])
def test_max_pool_vjp_matches_finite_differences(rounding, pad, size):
    spec_layer = MaxPool("p", kernel=3, stride=2, pad=pad, rounding=rounding)
    layer = _resolve_layer(spec_layer, (2, size, size))
    x = -np.abs(rng.normal(size=(2, 2, size, size))) - 1  # all negative: a window reading a zero pad would win
    g = rng.normal(size=(2, *layer.out_shape))
    gx = max_pool_vjp(x, g, layer)
    err = fd_jacobian_check(lambda t: apply_layer(layer, t, {}), x, g, gx)
    print(f"\nmaxpool {rounding} pad={pad} {size}->{layer.out_shape[1]} pads={layer.padding}: h={H_OP:g}, "
          f"worst error {err:.1e}")
    assert err < OP_TOL
    assert np.isclose(gx.sum(), g.sum())  # every window's gradient lands on one real pixel


@pytest.mark.parametrize("size,out", [(4, 3), (5, 3), (7, 3), (6, 6), (7, 6)])
def test_adaptive_avg_pool_vjp_matches_finite_differences(size, out):
    layer = AdaptiveAvgPool("a", output_size=out)
    x = rng.normal(size=(1, 2, size, size))
    g = rng.normal(size=(1, 2, out, out))
    gx = adaptive_avg_pool_vjp(x, g, layer)
    err = fd_jacobian_check(lambda t: apply_layer(layer, t, {}), x, g, gx)
    print(f"\nadaptive avgpool {size}->{out}: h={H_OP:g}, worst error {err:.1e}")
    assert err < OP_TOL
    if size == 7 and out == 3:  # bins [0,3) [2,5) [4,7): rows 2 and 4 sit in two bins
        one = np.zeros_like(g)
        one[0, 0, 0, 0] = one[0, 0, 1, 0] = 1.0
        assert adaptive_avg_pool_vjp(x, one, layer)[0, 0, 2, 0] == pytest.approx(2 * (1 / 3) * (1 / 3))


# --- the whole network ---------------------------------------------------------------------------------

SMALL = {"paper": 52, "caffe": 55, "caffenet": 55, "single-column": 67, "torchvision": 63, "slim-v2": 67}
WIDTH = 32  # fc6/fc7 width in the network checks: the geometry below them is every variant's own


def narrow(spec, width=WIDTH):
    """The spec with fc6 and fc7 `width` wide: the same ops and conv geometry, weights small enough that a
    directional derivative per tensor costs milliseconds."""
    layers, shape = [], None
    for layer in spec.layers:
        if shape is not None:
            if isinstance(layer, Dense) and layer.name != "fc8":
                layer = dataclasses.replace(layer, out_features=width)
            layer = _resolve_layer(layer, shape)
        elif isinstance(layer, Flatten):
            shape = layer.out_shape
        layers.append(layer)
        if shape is not None:
            shape = layer.out_shape
    return dataclasses.replace(spec, layers=tuple(layers))


def small_case(variant, batch=2, seed=0):
    spec = narrow(get_spec(variant, input_size=SMALL[variant], num_classes=3))
    w = {k: v.astype(np.float64) for k, v in parity_weights(spec, seed).items()}
    x = parity_input(spec, batch, seed + 1).astype(np.float64)
    return spec, w, x


def run_from(spec, w, start, a):
    """The last activation, running the layers after index `start` on activation a (start -1: a is the input),
    and every ReLU sign and window argmax on the way."""
    seen = []
    for layer in spec.layers[start + 1:]:
        if isinstance(layer, ReLU):
            seen.append(a > 0)
        elif isinstance(layer, MaxPool):
            seen.append(window_argmax(a, layer))
        a = apply_layer(layer, a, w)
    return a, seen


def _feeds_max_pool(spec, start):
    """True when the layers above `start` reach a max pool through LRN or dropout only."""
    for layer in spec.layers[start + 1:]:
        if isinstance(layer, MaxPool):
            return True
        if not isinstance(layer, (LRN, Dropout)):
            return False
    return False


STEPS = (1e-5, 1e-6, 1e-7)  # relative to the perturbed tensor's std; the largest that crosses no kink is used


def directional(run, c, point, d, where, scale=None):
    """(L(p + h d) - L(p - h d)) / 2h, L = sum(c * run(p)), for the largest h in STEPS at which every ReLU sign
    and window argmax is the same at both ends (a kink inside the step makes the quotient meaningless)."""
    scale = float(np.abs(point).std()) if scale is None else scale
    for rel in STEPS:
        h = rel * scale
        (up, seen_up), (down, seen_down) = run(point + h * d), run(point - h * d)
        if all(np.array_equal(p, q) for p, q in zip(seen_up, seen_down)):
            return float(((up - down) * c).sum()) / (2 * h), rel
    raise AssertionError(f"{where}: a ReLU or pool decision changes within every step; pick another direction")


@pytest.mark.parametrize("variant", list(SMALL))
def test_network_gradients_match_directional_finite_differences(variant):
    spec, w, x = small_case(variant)
    acts = reference_forward(spec, w, x)
    c = output_cotangent(spec, x.shape[0])
    grads = reference_backward(spec, w, x, c, acts=acts)
    assert set(grads.activations) == {layer.name for layer in spec.layers}
    assert set(grads.weights) == set(w) and all(grads.weights[k].shape == w[k].shape for k in w)
    d_rng = np.random.default_rng(7)
    errs, steps = {}, {}
    names = [layer.name for layer in spec.layers]
    for start, name, point, grad in [(-1, "input", x, grads.input),
                                     *[(i, n, acts[n], grads.activations[n]) for i, n in enumerate(names)]]:
        if isinstance(spec.layers[start], (Flatten, Dropout)) and start >= 0:
            continue  # the same numbers as the layer below, reshaped: its check is that one's
        d = d_rng.standard_normal(point.shape)
        if _feeds_max_pool(spec, start):  # moving an exact zero off 0 breaks a tie of zeros: a kink
            d[point == 0] = 0.0
        fd, steps[name] = directional(lambda a, start=start: run_from(spec, w, start, a), c, point, d, name)
        exact = float((grad * d).sum())
        errs[name] = abs(fd - exact) / abs(exact)
    for layer in spec.param_layers:  # weight and bias of a layer together, each scaled to its own std
        keys = (f"{layer.name}.weight", f"{layer.name}.bias")
        ds = [d_rng.standard_normal(w[k].shape) * float(np.abs(w[k]).std()) for k in keys]
        exact = sum(float((grads.weights[k] * dk).sum()) for k, dk in zip(keys, ds))

        def run(t, keys=keys, ds=ds):  # t: the step along the joint direction
            return run_from(spec, {**w, **{k: w[k] + float(t) * dk for k, dk in zip(keys, ds)}}, -1, x)

        fd, steps[layer.name + ".*"] = directional(run, c, 0.0, 1.0, layer.name, scale=1.0)
        errs[layer.name + ".*"] = abs(fd - exact) / abs(exact)
    worst = max(errs, key=errs.get)
    print(f"\n{variant}@{SMALL[variant]}: {len(errs)} directional checks, steps {sorted(set(steps.values()))} x each "
          f"tensor's std, worst relative error {errs[worst]:.1e} ({worst}, h={steps[worst]:g})")
    assert errs[worst] < 1e-6, errs


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(SMALL))
def test_full_width_network_input_gradient(variant):
    """With the variant's own 4096-wide fc6/fc7 (slow here: ~40M float64 weights per forward)."""
    spec = get_spec(variant, input_size=SMALL[variant], num_classes=3)
    w = {k: v.astype(np.float64) for k, v in parity_weights(spec).items()}
    x = parity_input(spec, 1).astype(np.float64)
    c = output_cotangent(spec, 1)
    grads = reference_backward(spec, w, x, c)
    d = np.random.default_rng(3).standard_normal(x.shape)
    fd, _ = directional(lambda a: run_from(spec, w, -1, a), c, x, d, "input")
    assert abs(fd - float((grads.input * d).sum())) < 1e-5 * abs(fd)


def test_bad_grad_output_is_one_clear_error():
    spec, w, x = small_case("torchvision", batch=1)
    with pytest.raises(ValueError, match=r"grad_output has shape \(1, 4\).*outputs \(1, 3\)"):
        reference_backward(spec, w, x, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="lack 'relu1'"):
        reference_backward(spec, w, x, np.zeros((1, 3)), routing={"conv1": x})
    acts = reference_forward(spec, w, x)
    with pytest.raises(ValueError, match=r"activation 'relu2' has shape \(1, 5\)"):
        reference_backward(spec, w, x, np.zeros((1, 3)), routing={**acts, "relu2": np.zeros((1, 5))})
    with pytest.raises(ValueError, match="no activation 'pool5'"):
        reference_backward(spec, w, x, np.zeros((1, 3)), acts={k: v for k, v in acts.items() if k != "pool5"})
    with pytest.raises(ValueError, match="input has shape"):
        reference_backward(spec, w, x[:, :2], np.zeros((1, 3)), acts=acts)


# --- near ties and routing -------------------------------------------------------------------------------

def tie_case():
    """torchvision@63 (narrow) with conv1's channel 0 a single centre tap, so that relu1[n, 0, i, j] is
    x[n, 0, 4i+3, 4j+3] (conv1 pads 2) and chosen pixels place ties exactly where the test wants them."""
    spec, w, x = small_case("torchvision")
    w["conv1.weight"][0] = 0.0
    w["conv1.weight"][0, 0, 5, 5] = 1.0
    w["conv1.bias"][0] = 0.0
    scale = float(np.abs(reference_forward(spec, w, x)["conv1"]).max())
    tiny = 1e-8 * scale  # far inside float32 rounding of 0 for this layer

    def at(i, j):  # the pixel that relu1[., 0, i, j] reads
        return 4 * i + 3, 4 * j + 3

    x[0, 0][at(1, 1)] = tiny        # a ReLU near-tie, positive
    x[0, 0][at(1, 3)] = -tiny       # a ReLU near-tie, negative
    x[0, 0][at(1, 5)] = 1e-3 * scale  # clearly positive: no tie
    for i in range(4, 7):           # pool1 window (2, 2) reads relu1 rows and columns 4..6
        for j in range(4, 7):
            x[0, 0][at(i, j)] = 10.0 * (i + j)   # below the pair, above 0
    x[0, 0][at(4, 4)] = 300.0
    x[0, 0][at(4, 5)] = 300.0 * (1 + 1e-9)  # its twin: windows (1, 2) and (2, 2) hold both
    for i in range(10, 13):         # window (5, 5): all zeros from clearly negative inputs, dead
        for j in range(10, 13):
            x[0, 0][at(i, j)] = x[1, 0][at(i, j)] = -50.0
    x[1, 0][at(11, 11)] = -tiny     # the same window in sample 1, with one zero that an engine may see > 0
    return spec, w, x, tiny


def test_find_near_ties_marks_the_constructed_elements_and_counts_them():
    spec, w, x, _ = tie_case()
    acts = reference_forward(spec, w, x)
    ties = find_near_ties(spec, acts, x)
    assert ties.rtol == NEAR_TIE_RTOL
    relu = ties.relu["relu1"][:, 0]
    assert set(zip(*np.nonzero(relu))) == {(0, 1, 1), (0, 1, 3), (1, 11, 11)}
    pool = ties.pool["pool1"][:, 0]
    assert set(zip(*np.nonzero(pool))) == {(0, 1, 2), (0, 2, 2), (1, 5, 5)}  # (0, 5, 5) is dead, left out
    counts = ties.counts()
    assert counts["relu1"] >= 3 and counts["pool1"] >= 3 and ties.total == sum(counts.values())
    # the same scan at a tolerance below the constructed gaps finds none of them
    strict = find_near_ties(spec, acts, x, rtol=1e-12)
    assert not strict.relu["relu1"][:, 0].any() and not strict.pool["pool1"][:, 0].any()


def test_routing_follows_the_engine_at_near_ties_only():
    """An engine whose rounding put every constructed tie on the other side: modelled exactly by the float64
    network at x', the input with those ties flipped (so its gradient is the true gradient at x')."""
    spec, w, x, tiny = tie_case()
    flipped = x.copy()
    flipped[0, 0, 7, 7], flipped[0, 0, 7, 15] = -tiny, tiny     # relu1 (0,0,1,1) and (0,0,1,3) flip
    flipped[1, 0, 47, 47] = tiny                                 # the dead window's fragile zero comes alive
    flipped[0, 0, 19, 19], flipped[0, 0, 19, 23] = x[0, 0, 19, 23], x[0, 0, 19, 19]  # the pool pair swaps
    engine_acts = reference_forward(spec, w, flipped)
    c = output_cotangent(spec, x.shape[0])
    engine = reference_backward(spec, w, flipped, c).as_dict()

    plain = reference_backward(spec, w, x, c)
    routed = reference_backward(spec, w, x, c, routing=engine_acts)
    plain_err = gradient_errors(spec, plain, engine)
    routed_err = gradient_errors(spec, routed, engine)
    assert max(plain_err.values()) > 1e-3  # a strict check of the engine against the float64 decisions fails
    assert max(routed_err.values()) < 1e-7, {k: v for k, v in routed_err.items() if v >= 1e-7}
    assert layer_at_fault(spec, routed_err, 1e-7) is None
    assert routed.rerouted["relu1"] == 3 and routed.rerouted["pool1"] == 3  # (1,2), (2,2) and the revived one
    assert sum(routed.rerouted.values()) == 6
    assert routed.near_ties is not None and plain.near_ties is None
    # the revived zero: the engine's pool sends its window's gradient there and its ReLU passes it on, where the
    # float64 decisions (first of nine zeros; ReLU closed) lose it
    assert plain.activations["relu1"][1, 0, 11, 11] == plain.activations["conv1"][1, 0, 11, 11] == 0.0
    assert routed.activations["relu1"][1, 0, 11, 11] == routed.activations["pool1"][1, 0, 5, 5] != 0.0
    assert routed.activations["conv1"][1, 0, 11, 11] == routed.activations["relu1"][1, 0, 11, 11]
    # a Routing built by hand is the same thing
    again = reference_backward(spec, w, x, c, routing=routing_from_activations(spec, engine_acts, flipped))
    np.testing.assert_array_equal(again.input, routed.input)


def test_routing_never_overrides_a_clear_decision():
    """An engine whose decisions are all wrong changes the gradient only at near-tie elements."""
    spec, w, x, _ = tie_case()
    acts = reference_forward(spec, w, x)
    ties = find_near_ties(spec, acts, x)
    wrong = Routing(relu={n: ~(acts[n] > 0) for n in ties.relu},
                    pool={n: np.zeros(m.shape, dtype=np.int64) for n, m in ties.pool.items()})
    c = output_cotangent(spec, x.shape[0])
    routed = reference_backward(spec, w, x, c, routing=wrong)
    assert routed.rerouted["relu1"] == ties.counts()["relu1"]  # at every tie the decision is the other one
    for name, mask in ties.relu.items():
        below = spec.layers[[layer.name for layer in spec.layers].index(name) - 1].name
        passes = routed.activations[below] != 0
        clear = ~mask & (routed.activations[name] != 0)
        np.testing.assert_array_equal(passes[clear], (acts[below] > 0)[clear])


# --- broken ports are caught at the layer at fault ---------------------------------------------------------

def _relu_passing_negatives(x, g, passes=None):
    return g


def _lrn_without_cross_channel_term(x, g, layer):
    return g * backward.lrn_denominator(x, layer) ** -layer.beta


def _pool_to_the_runner_up(x, g, layer, argmax=None):
    win = backward._windows(x, layer, -np.inf)
    return max_pool_vjp(x, g, layer, np.argsort(win.reshape(*win.shape[:4], -1), axis=-1)[..., -2])


BROKEN = {"relu": ("relu_vjp", _relu_passing_negatives), "lrn": ("lrn_vjp", _lrn_without_cross_channel_term),
          "maxpool": ("max_pool_vjp", _pool_to_the_runner_up)}


@pytest.mark.parametrize("kind,only,expected", [("relu", None, "relu7"), ("relu", "relu3", "relu3"),
                                                ("lrn", None, "norm2"), ("lrn", "norm1", "norm1"),
                                                ("maxpool", None, "pool5"), ("maxpool", "pool2", "pool2")])
def test_broken_vjp_is_named_at_its_layer(monkeypatch, kind, only, expected):
    """A port whose backward has one wrong op (at every layer of that kind, or at one layer) fails the
    comparison with the reference backward at exactly that layer."""
    spec, w, x = small_case("caffe")
    c = output_cotangent(spec, x.shape[0])
    ref = reference_backward(spec, w, x, c)
    name, bad = BROKEN[kind]
    good = getattr(backward, name)
    current = {"layer": None}
    real_layer_vjp = backward._layer_vjp

    def layer_vjp(layer, *args):
        current["layer"] = layer.name
        return real_layer_vjp(layer, *args)

    def chosen(*args, **kwargs):
        return (bad if only in (None, current["layer"]) else good)(*args, **kwargs)

    monkeypatch.setattr(backward, "_layer_vjp", layer_vjp)
    monkeypatch.setattr(backward, name, chosen)
    port = reference_backward(spec, w, x, c).as_dict()
    errs = gradient_errors(spec, ref, port)
    assert layer_at_fault(spec, errs, 1e-6) == expected, errs
    # an engine that reports only the input and weight gradients: the fault is bounded by what it reports
    partial = {k: v for k, v in errs.items() if k == "input" or "." in k}
    lowest = {"relu7": "fc7", "relu3": "conv3", "norm2": "conv2", "norm1": "conv1", "pool5": "conv5",
              "pool2": "conv2"}[expected]  # the nearest weights below the fault: the first gradient reported wrong
    assert layer_at_fault(spec, partial, 1e-6) == f"{lowest}..fc8"
    above = [layer.name for layer in spec.layers][[layer.name for layer in spec.layers].index(expected):]
    assert all(errs[n] <= 1e-12 for n in above)  # everything above the fault is untouched
    below = [layer.name for layer in spec.layers][[layer.name for layer in spec.layers].index(expected) - 1]
    print(f"\nbroken {kind} at {only or 'every ' + kind}: named {expected}, its input gradient off by "
          f"{errs[below]:.1e} relative")
