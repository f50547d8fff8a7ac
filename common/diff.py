"""Every difference between two variants, layer by layer, each with its consequence and its source."""
from __future__ import annotations

from dataclasses import dataclass

from .layers import LRN, AdaptiveAvgPool, Conv, Dense, MaxPool
from .spec import Spec, get_spec
from .variants import VARIANTS


@dataclass(frozen=True)
class Difference:
    aspect: str  # input | channels | kernel | padding | groups | lrn | order | rounding | adaptive | dropout | init | preprocessing | classes
    layer: str
    a: str
    b: str
    consequence: str
    why: str = ""


def _why(spec: Spec, aspect: str) -> str:
    return dict(VARIANTS[spec.variant].why).get(aspect, "")


def _both_why(a: Spec, b: Spec, aspect: str) -> str:
    reasons = [f"{s.variant}: {_why(s, aspect)}" for s in (a, b) if _why(s, aspect)]
    return "; ".join(reasons)


def _shape(layer) -> str:
    return "x".join(map(str, layer.out_shape))


def _delta(n: int) -> str:
    return f"{n:+,} params"


def _pad(layer) -> str:
    (t, b), (left, r) = layer.padding
    rule = {"floor": "", "ceil": " ceil", "same": " SAME"}[layer.rounding]
    return (f"{t}" if t == b == left == r else f"({t},{b}),({left},{r})") + rule


def _lrn(layer: LRN | None) -> str:
    if layer is None:
        return "none"
    return (f"k={layer.k:g} n={layer.size} alpha={layer.alpha:g}{'/n' if layer.alpha_over_n else ''} "
            f"beta={layer.beta:g} (sum scaled by {layer.scale:g})")


def _order(spec: Spec, i: int) -> str:
    names = [layer.name for layer in spec.layers]
    if f"norm{i}" not in names:
        return "pool only"
    return "norm then pool" if names.index(f"norm{i}") < names.index(f"pool{i}") else "pool then norm"


def _dropout_place(spec: Spec, fc: str) -> str:
    names = [layer.name for layer in spec.layers]
    drop = f"drop{fc[-1]}"
    if drop not in names or fc not in names:
        return "none"
    return f"on {fc}'s inputs" if names.index(drop) < names.index(fc) else f"on {fc}'s outputs"


def _layers(spec: Spec, kind) -> dict:
    return {layer.name: layer for layer in spec.layers if isinstance(layer, kind)}


def differences(a: Spec, b: Spec) -> list[Difference]:
    out: list[Difference] = []
    add = out.append
    if a.input_size != b.input_size:
        add(Difference("input", "input", str(a.input_size), str(b.input_size),
                       f"conv1 gives {_shape(a.layer('conv1'))} vs {_shape(b.layer('conv1'))}", _both_why(a, b, "input")))

    convs_a, convs_b = _layers(a, Conv), _layers(b, Conv)
    for name in convs_a.keys() & convs_b.keys():
        ca, cb = convs_a[name], convs_b[name]
        if ca.out_channels != cb.out_channels:
            add(Difference("channels", name, f"{ca.out_channels} kernels", f"{cb.out_channels} kernels",
                           f"output {_shape(ca)} vs {_shape(cb)}", _both_why(a, b, "channels")))
        if ca.kernel != cb.kernel or ca.stride != cb.stride:
            add(Difference("kernel", name, f"{ca.kernel}x{ca.kernel}/{ca.stride}", f"{cb.kernel}x{cb.kernel}/{cb.stride}",
                           f"output {_shape(ca)} vs {_shape(cb)}", _both_why(a, b, "kernel")))
        if (ca.pad, ca.rounding, ca.padding) != (cb.pad, cb.rounding, cb.padding):
            add(Difference("padding", name, _pad(ca), _pad(cb), _sizes(ca, cb), _both_why(a, b, "padding")))
        if ca.groups != cb.groups:
            add(Difference("groups", name, str(ca.groups), str(cb.groups),
                           f"each kernel sees {ca.in_channels // ca.groups} vs {cb.in_channels // cb.groups} input "
                           "channels", _both_why(a, b, "groups")))
        _params_row(out, a, b, ca, cb)

    lrn_a, lrn_b = _layers(a, LRN), _layers(b, LRN)
    for name in sorted(lrn_a.keys() | lrn_b.keys()):
        la, lb = lrn_a.get(name), lrn_b.get(name)
        if la is not None and lb is not None and (la.k, la.size, la.alpha, la.alpha_over_n, la.beta) == \
                (lb.k, lb.size, lb.alpha, lb.alpha_over_n, lb.beta):
            continue
        if la is None or lb is None:
            consequence = "no parameters either way; changes every activation after it"
        else:
            consequence = (f"b = a / ({la.k:g} + {la.scale:g}*sum a^2)^{la.beta:g} vs "
                           f"a / ({lb.k:g} + {lb.scale:g}*sum a^2)^{lb.beta:g}: not the same function")
        add(Difference("lrn", name, _lrn(la), _lrn(lb), consequence, _both_why(a, b, "lrn")))
    for i in (1, 2):
        oa, ob = _order(a, i), _order(b, i)
        if oa != ob and "pool only" not in (oa, ob):
            add(Difference("order", f"norm{i}/pool{i}", oa, ob,
                           "normalisation sees 4x more positions before pooling; outputs differ",
                           _both_why(a, b, "order")))

    pools_a, pools_b = _layers(a, MaxPool), _layers(b, MaxPool)
    for name in pools_a.keys() & pools_b.keys():
        pa, pb = pools_a[name], pools_b[name]
        if pa.rounding != pb.rounding:
            add(Difference("rounding", name, pa.rounding, pb.rounding, _rounding_consequence(a, b, name),
                           _both_why(a, b, "rounding")))

    ad_a, ad_b = _layers(a, AdaptiveAvgPool), _layers(b, AdaptiveAvgPool)
    if ad_a.keys() != ad_b.keys():
        add(Difference("adaptive", "avgpool", "yes" if ad_a else "none", "yes" if ad_b else "none",
                       "with it, any input size reaches fc6 with the same number of inputs",
                       _both_why(a, b, "adaptive")))

    for fc in ("fc6", "fc7"):
        da, db = _dropout_place(a, fc), _dropout_place(b, fc)
        if da != db:
            add(Difference("dropout", fc, da, db, "only training differs: which units are zeroed",
                           _both_why(a, b, "dropout")))

    dense_a, dense_b = _layers(a, Dense), _layers(b, Dense)
    for name in dense_a.keys() & dense_b.keys():
        fa, fb = dense_a[name], dense_b[name]
        if fa.in_features != fb.in_features:
            add(Difference("channels", name, f"{fa.in_features} inputs", f"{fb.in_features} inputs",
                           "follows pool5's shape"))
        if fa.out_features != fb.out_features:
            add(Difference("classes", name, str(fa.out_features), str(fb.out_features), "a new classifier"))
        _params_row(out, a, b, fa, fb)

    init_changes: dict[tuple[str, str, str], list[str]] = {}
    for layer in a.param_layers:
        if layer.name not in convs_b and layer.name not in dense_b:
            continue
        other = b.layer(layer.name)
        for part in ("weight", "bias"):
            ia, ib = str(getattr(layer, f"{part}_init")), str(getattr(other, f"{part}_init"))
            if ia != ib:
                init_changes.setdefault((part, ia, ib), []).append(layer.name)
    for (part, ia, ib), names in init_changes.items():
        add(Difference("init", f"{part}{'es' if part == 'bias' else 's'} of {', '.join(names)}", ia, ib, "training starts elsewhere",
                       _both_why(a, b, "init")))

    if a.preprocessing != b.preprocessing:
        add(Difference("preprocessing", "input pixels", _pre(a.preprocessing), _pre(b.preprocessing),
                       "feed each model its own preprocessing",
                       f"{a.variant}: {a.preprocessing.source}; {b.variant}: {b.preprocessing.source}"))

    order: dict[str, int] = {}
    for layer in a.layers + b.layers:
        order.setdefault(layer.name, len(order))
    rank = {"input": -1, "init": len(order), "preprocessing": len(order) + 1}
    out.sort(key=lambda d: rank.get(d.aspect, order.get(d.layer.split("/")[0], -1)))
    return out


def _sizes(la, lb) -> str:
    sa, sb = "x".join(map(str, la.out_shape[1:])), "x".join(map(str, lb.out_shape[1:]))
    return f"both give {sa}" if sa == sb else f"output {sa} vs {sb}"


def _params_row(out: list, a: Spec, b: Spec, la, lb) -> None:
    pa, pb = a.layer_params(la), b.layer_params(lb)
    if pa != pb:
        out.append(Difference("params", la.name, f"{pa:,}", f"{pb:,}", _delta(pb - pa)))


def _pre(p) -> str:
    scale = "[0, 1]" if p.pixel_range == 1.0 else "[0, 255]"
    std = "" if p.std == (1.0, 1.0, 1.0) else f" / std {p.std}"
    return f"{p.color_order} in {scale} minus {p.mean}{std}, short side {p.resize}, crop {p.crop}"


def _rounding_consequence(a: Spec, b: Spec, pool: str) -> str:
    """Where floor and ceil pooling part ways: the first size near the default where pool5 shapes differ."""
    for size in (a.input_size, 256, 240, 320):
        try:
            sa, sb = get_spec(a.variant, input_size=size), get_spec(b.variant, input_size=size)
        except ValueError:
            continue
        if sa.layer(pool).out_shape[1:] != sb.layer(pool).out_shape[1:]:
            return f"at input {size}: {pool} {_shape(sa.layer(pool))} vs {_shape(sb.layer(pool))}"
    return "same shapes at the usual sizes"


def summary_line(a: Spec, b: Spec) -> str:
    return (f"{a.variant} {a.param_count():,} params, {b.variant} {b.param_count():,} "
            f"({b.param_count() - a.param_count():+,}); MACs {a.mac_count():,} vs {b.mac_count():,}")
