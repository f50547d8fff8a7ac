"""`alexnet diff A B`: every difference between two variants, with consequence and source."""
from __future__ import annotations

import json
import textwrap
from dataclasses import asdict

from alexnet_parity.common import VARIANTS, get_spec
from alexnet_parity.common.diff import differences, summary_line


def add_arguments(p):
    p.add_argument("a", choices=list(VARIANTS), metavar="A", help=f"one of: {', '.join(VARIANTS)}")
    p.add_argument("b", choices=list(VARIANTS), metavar="B", help="the variant to compare with")
    p.add_argument("--input-size", type=int, help="compare both at this input size (default: each its own)")
    p.add_argument("--json", action="store_true", help="print the differences as JSON")


def run(args) -> int:
    a = get_spec(args.a, input_size=args.input_size)
    b = get_spec(args.b, input_size=args.input_size)
    diffs = differences(a, b)
    if args.json:
        print(json.dumps({"a": a.variant, "b": b.variant, "params": [a.param_count(), b.param_count()],
                          "differences": [asdict(d) for d in diffs]}, indent=2))
        return 0
    print(f"{a.variant} ({VARIANTS[a.variant].source})\n  vs {b.variant} ({VARIANTS[b.variant].source})")
    print(summary_line(a, b))
    if not diffs:
        print("no differences")
    for d in diffs:
        print(f"\n[{d.aspect}] {d.layer}: {d.a}  ->  {d.b}")
        print(textwrap.fill(d.consequence, 100, initial_indent="    consequence: ", subsequent_indent=" " * 17))
        if d.why:
            print(textwrap.fill(d.why, 100, initial_indent="    why: ", subsequent_indent=" " * 9))
    return 0
