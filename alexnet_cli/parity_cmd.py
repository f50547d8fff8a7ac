"""`alexnet parity`: every variant in every engine of the registry (common.engines), each layer against the
float64 reference and against each other; a table, JSON and a chart. With --convert, each engine gets its
weights through its own checkpoint format (canonical -> the first engine's file -> the next's ...), and the
round trip must be bit-identical."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

from alexnet_parity.common import VARIANTS, get_spec
from alexnet_parity.common.engines import compared, engines, get_engine
from alexnet_parity.common.dtypes import DTYPES
from alexnet_parity.parity_tests.core import (DTYPE_TOLERANCES, TOLERANCE, config_id, configs, dtype_failures, failures,
                                              parity_weights, run_parity)

from ._json import write_json


def convert_file(name: str) -> tuple[str, str]:
    """(format, file name) an engine's weights travel through with --convert: its first native format."""
    engine = get_engine(name)
    if not engine.formats:
        raise ValueError(f"--convert: {name} reads no checkpoint format of its own")
    return engine.formats[0], f"weights{engine.suffix}"


def add_arguments(p):
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help=f"variants to run (default: every variant plus the cases the suite checks): {', '.join(VARIANTS)}")
    p.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu",
                   help="cpu, gpu, or all devices present (default cpu)")
    p.add_argument("--frameworks", default=",".join(compared()),
                   help=f"comma-separated subset of {','.join(engines())} (default: all installed but the "
                   "reference, which every one is measured against)")
    p.add_argument("--input-size", type=int, help="with VARIANT: run at this input size")
    p.add_argument("--num-classes", type=int, help="with VARIANT: this many outputs in fc8")
    p.add_argument("--batch", type=int, default=2, help="images per run (default 2)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"max relative error allowed (default {TOLERANCE:g})")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="build every engine's model in this dtype (the engines whose registry record lists it) and "
                   "gate each layer against the float64 reference by that dtype's tolerance (default float32)")
    p.add_argument("--convert", action="store_true",
                   help="give each framework its weights through its own checkpoint file, and check the round trip")
    p.add_argument("--layers", action="store_true", help="print every layer, not only the per-variant summary")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw error per layer per framework to a PNG")
    p.add_argument("--grad", action="store_true",
                   help="gradient parity instead: each autodiff engine's gradients (input, every layer, every "
                   "weight) against the float64 backward on the engine's own routing at near ties")
    p.add_argument("--sweep", type=int, metavar="N",
                   help="run N configs drawn from --seed (variant, input size, batch 1-8, seed, 1 or 2 threads) "
                   "and report the distribution of the worst error per engine pair")
    p.add_argument("--seed", type=int, default=0, help="with --sweep: the seed the configs are drawn from (default 0)")


def _configs(args):
    if not args.variants:
        if args.input_size or args.num_classes:
            raise ValueError("--input-size and --num-classes need a VARIANT")
        return list(configs())
    overrides = {k: v for k, v in (("input_size", args.input_size), ("num_classes", args.num_classes)) if v}
    for v in args.variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    return [(v, overrides) for v in args.variants]


def _frameworks(args):
    names = tuple(n.strip() for n in args.frameworks.split(",") if n.strip())
    unknown = [n for n in names if n not in engines()]
    if unknown:
        raise ValueError(f"--frameworks: unknown {unknown[0]!r}; choose from {', '.join(engines())}")
    missing = [n for n in names if not get_engine(n).available()]
    for n in missing:
        print(f"[parity] {n}: not installed, left out", file=sys.stderr)
    present = tuple(n for n in names if n not in missing)
    if not present:
        raise ValueError("none of the requested frameworks is installed (pip install 'alexnet-parity[all]')")
    return present


def _dtype_frameworks(dtype, frameworks):
    """The frameworks that build a `dtype` model (the registry's `dtypes`); the others are left out, said so."""
    kept = tuple(n for n in frameworks if dtype in get_engine(n).dtypes)
    for n in frameworks:
        if n not in kept:
            print(f"[parity] {n}: builds no {dtype} model, left out", file=sys.stderr)
    if not kept:
        raise ValueError(f"--dtype {dtype}: none of {', '.join(frameworks)} builds it")
    return kept


def _gate(args):
    """(the tolerance as printed, result -> its failing layers): --tolerance for every layer and pair in float32;
    in another dtype, each engine against the float64 reference by DTYPE_TOLERANCES."""
    if args.dtype == "float32":
        return f"{args.tolerance:g}", lambda r: failures(r, args.tolerance)
    layers, logits = DTYPE_TOLERANCES[args.dtype]
    return f"{args.dtype} {layers:g} per layer, {logits:g} at the output, vs the float64 reference", dtype_failures


def _devices(args, frameworks):
    if args.device == "cpu":
        return ["cpu"]
    gpu = [n for n in frameworks if "gpu" in get_engine(n).devices()]
    if not gpu:
        if args.device == "gpu":
            raise ValueError("--device gpu: no GPU visible to " + ", ".join(frameworks))
        print("[parity] no GPU visible to any framework: running on cpu only", file=sys.stderr)
        return ["cpu"]
    return ["cpu", "gpu"] if args.device == "all" else ["gpu"]


def converted_weights(variant, overrides, frameworks, seed=0):
    """Weights for each engine, read back from that engine's own checkpoint format. Chain: canonical
    safetensors -> each engine's file in turn (torch .pt -> keras .weights.h5 -> ...), each loaded from the
    previous one."""
    import numpy as np

    from alexnet_parity import weights_convert
    spec = get_spec(variant, **overrides)
    weights = parity_weights(spec, seed)
    out = {}
    with tempfile.TemporaryDirectory(prefix="alexnet-parity-") as tmp:
        src = os.path.join(tmp, "source.safetensors")
        weights_convert.save(src, spec, weights, fmt="canonical")
        for name in frameworks:
            fmt, filename = convert_file(name)
            dst = os.path.join(tmp, filename)
            # a torch state_dict or an h5 file need not record the input size (paper at 224 and 227 hold the
            # same shapes), so the reader is told the one we know
            spec_in, w_in = weights_convert.load(src, variant=variant, input_size=spec.input_size)
            weights_convert.save(dst, spec_in, w_in, fmt=fmt)
            spec_out, w_out = weights_convert.load(dst, fmt=fmt, variant=variant, input_size=spec.input_size)
            if spec_out != spec:
                raise AssertionError(f"{fmt}: read back as {spec_out.describe()}, wrote {spec.describe()}")
            for key, value in weights.items():
                if not np.array_equal(value, w_out[key]) or w_out[key].dtype != value.dtype:
                    raise AssertionError(f"{fmt}: tensor {key!r} changed in the round trip")
            out[name] = w_out
            src = dst
    return out


def _summary_rows(results):
    """A row per run: each engine against the reference, then the worst of its engine pairs where there are pairs
    (every pair is in --layers, the JSON and the chart: with six engines, fifteen pair columns would not fit a
    terminal)."""
    order = list(engines())
    who = sorted({w for r in results for w in r.vs_reference}, key=order.index)
    paired = any(r.pairs for r in results)
    rows = [["variant", "device", *[f"{w} vs ref" for w in who], *(["worst pair", ""] if paired else []),
             "worst layer"]]
    for r in results:
        cells = [f"{max(r.vs_reference[w].values()):.1e}" if w in r.vs_reference else "-" for w in who]
        if paired:
            pair = max(r.pairs, key=lambda p: max(r.pairs[p].values()), default=None)
            cells += [f"{max(r.pairs[pair].values()):.1e}", pair] if pair else ["-", ""]
        rows.append([r.id, r.device, *cells, r.worst()[1]])
    return rows


def _print_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _print_layers(r):
    cols = [*r.vs_reference, *r.pairs]
    rows = [["layer", *[c if "~" in c else f"{c} vs ref" for c in cols]]]
    table = {**r.vs_reference, **r.pairs}
    for layer in r.layers:
        rows.append([layer, *[f"{table[c][layer]:.1e}" for c in cols]])
    print(f"\n{r.id} on {r.device}: max|a-b| / max|reference|")
    _print_table(rows)


def plot(results, path, tolerance):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    colors = {name: e.color for name, e in engines().items()}
    for ax, r in zip(axes.flat, results):
        x = range(len(r.layers))
        floor = 1e-10  # exact agreement (0) drawn at the floor of the log axis
        for name, table in r.vs_reference.items():
            ax.semilogy(x, [max(table[l], floor) for l in r.layers], "-o", ms=3, color=colors[name], label=f"{name} vs ref")
        if r.pairs:  # every pair is in the JSON; drawn, fifteen lines would hide the engines' own
            ax.semilogy(x, [max(max(t[l] for t in r.pairs.values()), floor) for l in r.layers], "--", lw=1.2,
                        color="gray", label="worst engine pair", dashes=(4, 2))
        ax.axhline(tolerance, color="black", lw=0.8, ls=":", label=f"tolerance {tolerance:g}")
        ax.set_title(f"{r.id} ({r.device})", fontsize=10)
        ax.set_xticks(list(x), r.layers, rotation=90, fontsize=6)
        ax.set_ylim(floor / 2, max(1e-4, tolerance * 10))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7, frameon=False)
    fig.suptitle("alexnet-parity: per-layer relative error, max|a-b| / max|float64 reference|")
    legend_rows = -(-len(labels) // 5)
    fig.tight_layout(rect=(0, 0.03 * legend_rows / rows + 0.02, 1, 0.97))
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def run(args) -> int:
    # tf_impl compiles its LRN once per shape, which TF reports as "retracing" warnings: by design here
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.grad:
        return run_grad(args)
    if args.sweep is not None:
        from .parity_sweep import run_sweep
        return run_sweep(args, _frameworks(args))
    configs = _configs(args)
    frameworks = _dtype_frameworks(args.dtype, _frameworks(args))
    devices = _devices(args, frameworks)
    results, started = [], time.perf_counter()
    total = len(configs) * len(devices)
    for i, ((variant, overrides), device) in enumerate(((c, d) for c in configs for d in devices), 1):
        label = config_id(variant, overrides)
        print(f"[parity] {i}/{total} {label} on {device} ...", file=sys.stderr, flush=True)
        weights_for = None
        if args.convert:
            weights_for = converted_weights(variant, overrides, frameworks)
            print(f"[parity]   weights through {' -> '.join(convert_file(f)[1] for f in frameworks)}: "
                  "bit-identical", file=sys.stderr)
        r = run_parity(variant, overrides, device=device, frameworks=frameworks, batch=args.batch,
                       weights_for=weights_for, dtype=args.dtype)
        results.append(r)
        if args.layers:
            _print_layers(r)
    print(f"\nParity on {', '.join(devices)}: max over layers of max|a-b| / max|float64 reference| "
          f"({len(results)} runs, {time.perf_counter() - started:.0f} s)")
    _print_table(_summary_rows(results))
    worst = max(results, key=lambda r: r.worst()[0])
    tolerance, check = _gate(args)
    bad = [f"{r.id}/{r.device}: {f}" for r in results for f in check(r)]
    print(f"\nlargest error: {worst.worst()[0]:.2e} ({worst.id} on {worst.device}, {worst.worst()[1]}); "
          f"tolerance {tolerance}: {'PASS' if not bad else f'FAIL ({len(bad)} layers)'}")
    for line in bad[:20]:
        print(f"  {line}")
    if args.json:
        write_json(args.json, {"tolerance": args.tolerance, "frameworks": list(frameworks), "convert": args.convert,
                               "results": [r.to_dict() for r in results]})
    if args.plot:
        plot(results, args.plot, args.tolerance)
        print(f"wrote {args.plot}")
    return 1 if bad else 0


def run_grad(args) -> int:
    """`alexnet parity --grad`: per config and autodiff engine, the worst gradient error against the float64
    backward and the near-tie elements where the engine's routing was followed; a Markdown table (the one in
    docs/parity.md), --json with every tensor's error."""
    from alexnet_parity.common.engines import differentiable
    from alexnet_parity.parity_tests.grad import GRAD_TOLERANCE, grad_failures, run_grad_parity

    for option in ("convert", "plot"):
        if getattr(args, option):
            raise ValueError(f"--grad: --{option} is not supported (gradients use the canonical weights, no plot)")
    tolerance = GRAD_TOLERANCE if args.tolerance == TOLERANCE else args.tolerance
    configs = _configs(args)
    frameworks = [n for n in _frameworks(args) if n in differentiable()]
    for n in _frameworks(args):
        if n not in differentiable() and not get_engine(n).oracle:
            print(f"[parity] {n}: no autodiff, left out of --grad", file=sys.stderr)
    if not frameworks:
        raise ValueError("--grad: none of the requested engines has autodiff (" + ", ".join(differentiable()) + ")")
    devices = _devices(args, frameworks)
    results, started = [], time.perf_counter()
    runs = [(c, d, f) for c in configs for d in devices for f in frameworks if d in get_engine(f).devices()]
    for i, ((variant, overrides), device, name) in enumerate(runs, 1):
        print(f"[parity] {i}/{len(runs)} {config_id(variant, overrides)} {name} on {device} ...", file=sys.stderr,
              flush=True)
        results.append(run_grad_parity(variant, overrides, engine=name, device=device, batch=args.batch))
    rows = [["config", "device", "engine", "worst gradient error", "tensor", "rerouted / near ties",
             "forward worst"]]
    for r in results:
        err, where = r.worst()
        rows.append([r.id, r.device, r.engine, f"{err:.1e}", where,
                     f"{sum(r.rerouted.values())} / {sum(r.near_ties.values())}", f"{max(r.forward.values()):.1e}"])
    print(f"\nGradient parity on {', '.join(devices)}, batch {args.batch}: max|engine - float64| / max|float64| over "
          f"the input, every layer output and every weight ({len(results)} runs, {time.perf_counter() - started:.0f} s)\n")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "|".join("---" for _ in rows[0]) + "|")
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
    bad = [f"{r.id}/{r.device}: {f}" for r in results for f in grad_failures(r, tolerance)]
    worst = max(results, key=lambda r: r.worst()[0])
    print(f"\nlargest gradient error: {worst.worst()[0]:.2e} ({worst.id} {worst.engine} on {worst.device}, "
          f"d/d {worst.worst()[1]}); tolerance {tolerance:g}: {'PASS' if not bad else f'FAIL ({len(bad)})'}")
    for line in bad[:20]:
        print(f"  {line}")
    if args.json:
        write_json(args.json, {"tolerance": tolerance, "forward_tolerance": TOLERANCE, "batch": args.batch,
                               "frameworks": frameworks, "results": [r.to_dict() for r in results]})
    return 1 if bad else 0
