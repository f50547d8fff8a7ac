"""`alexnet parity --sweep N [--seed S]`: N drawn configs (parity_tests.sweep), the distribution of the worst
error per engine pair and against the reference, and every config that fails the tolerance, named."""
from __future__ import annotations

import sys

from alexnet_parity.common import VARIANTS
from alexnet_parity.common.engines import engines
from alexnet_parity.parity_tests import sweep as sweep_mod

from .parity_cmd import _print_table
from ._json import write_json

# options of a plain `alexnet parity` run that a sweep draws itself or does not do
_NOT_WITH_SWEEP = (("input_size", "--input-size"), ("num_classes", "--num-classes"), ("convert", "--convert"),
                   ("plot", "--plot"), ("layers", "--layers"))


def check_args(args) -> None:
    for attr, option in _NOT_WITH_SWEEP:
        if getattr(args, attr, None):
            raise ValueError(f"--sweep draws its own configs: {option} does not go with it")
    if args.device != "cpu":
        raise ValueError("--sweep runs on the cpu (its thread counts are CPU threads), not --device " + args.device)
    if args.batch != 2:
        raise ValueError(f"--sweep draws the batch ({sweep_mod.BATCHES.start}-{sweep_mod.BATCHES.stop - 1}): "
                         "--batch does not go with it")
    if args.sweep < 1:
        raise ValueError(f"--sweep: the number of configs must be at least 1, got {args.sweep}")
    for v in args.variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")


def _order(who: str):
    names = list(engines())
    return ("~" in who, [names.index(n) if n in names else len(names) for n in who.split("~")])


def run_sweep(args, frameworks) -> int:
    check_args(args)
    n = args.sweep
    print(f"[parity] sweep of {n} configs from seed {args.seed}: sizes from each variant's smallest to its own "
          f"+ {sweep_mod.SIZE_ABOVE_DEFAULT}, batch {sweep_mod.BATCHES.start}-{sweep_mod.BATCHES.stop - 1}, "
          f"threads {' or '.join(map(str, sweep_mod.THREADS))}, eval mode", file=sys.stderr, flush=True)
    report = sweep_mod.sweep(n, args.seed, frameworks, args.tolerance, tuple(args.variants) or None,
                             progress=lambda line: print(f"[parity] {line}", file=sys.stderr, flush=True))
    stats = report.stats()
    print(f"\nSweep of {n} configs (seed {args.seed}) in {', '.join(frameworks)}: worst error of each config, "
          f"max|a-b| / max|float64 reference| over its layers ({report.seconds:.0f} s)")
    rows = [["pair", "configs", "min", "median", "p95", "max", "layer", "config of the max"]]
    for who in sorted(stats, key=_order):
        s = stats[who]
        rows.append([who if "~" in who else f"{who} vs ref", s["configs"], f"{s['min']:.1e}", f"{s['median']:.1e}",
                     f"{s['p95']:.1e}", f"{s['max']:.1e}", s["max_layer"], s["max_config"]])
    _print_table(rows)
    print("\nthreads: " + "; ".join(
        f"{t}: " + ", ".join(f"{name} {p['reported']} set, {p['busy']} busy" for name, p in engs.items())
        for t, engs in sorted(report.threads.items())))
    print(f"workers: {len(report.workers)} started (a fresh one after {sweep_mod.RESTART_EVERY} configs or past "
          f"{sweep_mod.RSS_LIMIT / 2**30:g} GiB resident), peak resident memory {report.peak_rss() / 2**30:.2f} GiB")
    for i, why in sorted(report.retried.items()):
        print(f"retried in a fresh worker: {report.configs[i].id}: {why}"
              + ("" if i in report.errors else " (passed on the retry)"))
    bad = report.failures()
    worst = max(((s["max"], who, s) for who, s in stats.items()), default=None)
    if worst:
        print(f"largest error: {worst[0]:.2e} ({worst[1]} {worst[2]['max_layer']}, {worst[2]['max_config']})")
    print(f"tolerance {args.tolerance:g}: {'PASS' if not bad else f'FAIL ({len(bad)})'}")
    for line in bad[:20]:
        print(f"  {line}")
    if args.json:
        write_json(args.json, {"sweep": n, "seed": args.seed, **report.to_dict()})
    return 1 if bad else 0
