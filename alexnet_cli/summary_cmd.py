"""`alexnet summary`: the per-layer table of a resolved spec. Imports no deep-learning framework."""
from __future__ import annotations

import json

from alexnet_parity.common import VARIANTS, get_spec
from alexnet_parity.common.layers import LRN, AdaptiveAvgPool, Conv, Dense, Dropout, MaxPool


def add_arguments(p):
    p.add_argument("variant", choices=list(VARIANTS), metavar="VARIANT", help=f"one of: {', '.join(VARIANTS)}")
    p.add_argument("--input-size", type=int, help="square input size (default: the variant's own)")
    p.add_argument("--num-classes", type=int, help="outputs of fc8 (default 1000)")
    p.add_argument("--no-top", action="store_true", help="feature extractor only: stop before fc6")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def layer_detail(layer) -> str:
    if isinstance(layer, Conv):
        return f"{layer.kernel}x{layer.kernel}/{layer.stride}"
    if isinstance(layer, MaxPool):
        return f"{layer.kernel}x{layer.kernel}/{layer.stride} {layer.rounding}"
    if isinstance(layer, LRN):
        return f"n={layer.size} k={layer.k:g} a={layer.alpha:g}{'/n' if layer.alpha_over_n else ''} b={layer.beta:g}"
    if isinstance(layer, AdaptiveAvgPool):
        return f"-> {layer.output_size}x{layer.output_size}"
    if isinstance(layer, Dropout):
        return f"p={layer.rate:g}"
    if isinstance(layer, Dense):
        return f"{layer.in_features} -> {layer.out_features}"
    return ""


def padding_text(layer) -> str:
    if not isinstance(layer, (Conv, MaxPool)):
        return ""
    (t, b), (left, r) = layer.padding
    if t == b == left == r:
        return str(t)
    return f"({t},{b}),({left},{r})"


def summary_dict(spec) -> dict:
    return {
        "variant": spec.variant, "input_size": spec.input_size, "num_classes": spec.num_classes,
        "include_top": spec.include_top, "input_shape": list(spec.input_shape),
        "params": spec.param_count(), "macs": spec.mac_count(), "neurons": spec.neuron_count(),
        "layers": [{"name": layer.name, "kind": layer.kind, "detail": layer_detail(layer),
                    "padding": [list(p) for p in layer.padding] if isinstance(layer, (Conv, MaxPool)) else None,
                    "groups": getattr(layer, "groups", None), "output_shape": list(layer.out_shape),
                    "params": spec.layer_params(layer), "macs": spec.layer_macs(layer)} for layer in spec.layers],
    }


def render_table(spec) -> str:
    head = ("layer", "kind", "kernel/stride", "padding", "groups", "output", "params", "MACs")
    rows = [head]
    for layer in spec.layers:
        rows.append((layer.name, layer.kind, layer_detail(layer), padding_text(layer),
                     str(getattr(layer, "groups", "")) if isinstance(layer, Conv) else "",
                     "x".join(map(str, layer.out_shape)),
                     f"{spec.layer_params(layer):,}" if layer.has_params else "",
                     f"{spec.layer_macs(layer):,}" if layer.has_params else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {6, 7}
    fmt = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    lines = [f"{VARIANTS[spec.variant].title}: {spec.describe()}, input 3x{spec.input_size}x{spec.input_size} NCHW",
             rule, fmt(head), rule, *map(fmt, rows[1:]), rule,
             f"params {spec.param_count():,}   MACs {spec.mac_count():,}   neurons {spec.neuron_count():,}",
             f"source: {VARIANTS[spec.variant].source}"]
    return "\n".join(lines)


def run(args) -> int:
    spec = get_spec(args.variant, input_size=args.input_size, num_classes=args.num_classes, include_top=not args.no_top)
    print(json.dumps(summary_dict(spec), indent=2) if args.json else render_table(spec))
    return 0
