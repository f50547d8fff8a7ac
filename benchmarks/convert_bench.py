"""Wall time and peak memory of `alexnet convert` on a full-size checkpoint, for every ordered pair of formats,
against plain torch.load + torch.save of the same checkpoint as the yardstick.

Each conversion runs in a fresh interpreter, as `alexnet convert SRC DST` would: it first imports what the
two formats need (timed apart, since on a busy machine it is the noisiest part), then calls the CLI's
main(); the child's own peak resident memory comes from os.wait4's rusage, and this process stays small,
because a child's peak counts its parent's memory at fork time. Pairs with slim use slim-v2 (50.3 M parameters, the
only variant TF-slim has); the others use torchvision (61.1 M).

    python benchmarks/convert_bench.py                      # all pairs (several minutes)
    python benchmarks/convert_bench.py --formats torch,caffe,canonical --repeat 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FILES = {"canonical": "w.safetensors", "torch": "w.pt", "torchvision": "w.pth", "keras": "w.weights.h5",
         "flax": "w.msgpack", "caffe": "w.caffemodel", "slim": "w.ckpt"}
EXTRA_DESTINATIONS = {"keras": "w.keras", "flax": "w.orbax"}  # the other container of each, from canonical
# what each format imports when it runs (pre-imported in the child, so that 'converting' is the work alone)
IMPORTS = {"canonical": ["safetensors.numpy"], "caffe": [], "torch": ["torch"], "torchvision": ["torch"],
           "keras": ["tf_impl", "h5py"], "slim": ["tensorflow"], "flax": ["jax_impl", "flax.serialization"]}


CHILD = """\
import time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
{work}
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def run_child(imports: str, work: str, env) -> tuple[float, float, float, float]:
    """(wall s, import s, work s, peak RSS MiB) of one fresh interpreter: the imports, then the work."""
    code = CHILD.format(imports=imports, work=work)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:  # files: a chatty child cannot block
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"benchmark child failed:\n{code}\n{err.read().decode(errors='replace')[-2000:]}")
        out.seek(0)
        imported, worked = map(float, out.read().decode().split()[-2:])
    return wall, imported, worked, usage.ru_maxrss / 1024.0


def best_of(imports, work, repeat, env) -> tuple[float, float, float, float]:
    """The fastest of `repeat` runs (wall, import, work), and the largest peak RSS."""
    runs = [run_child(imports, work, env) for _ in range(repeat)]
    return (min(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs), max(r[3] for r in runs))


def size_mib(path: str) -> float:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 2**20
    if not os.path.exists(path) and os.path.exists(path + ".index"):
        parent, base = os.path.split(path)
        return sum(os.path.getsize(os.path.join(parent, f)) for f in os.listdir(parent) if f.startswith(base)) / 2**20
    return os.path.getsize(path) / 2**20


def remove(path: str) -> None:
    """A file, a directory, or a checkpoint prefix's files."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    parent, base = os.path.split(path)
    for name in os.listdir(parent):
        if name == base or name.startswith(base + "."):
            os.remove(os.path.join(parent, name))


def make_sources(work: str, formats: list[str]) -> None:
    """Full-size checkpoints in every format (not timed): torchvision for all, slim-v2 for slim's pairs."""
    import numpy as np

    from alexnet_parity import weights_convert as wc
    from alexnet_parity.common import get_spec

    for variant in ("torchvision", "slim-v2"):
        spec = get_spec(variant)
        rng = np.random.default_rng(0)
        weights = {k: rng.standard_normal(s, dtype=np.float32) * 0.01 for k, s in spec.weight_shapes().items()}
        folder = os.path.join(work, variant)
        os.makedirs(folder, exist_ok=True)
        for fmt in formats:
            if wc.can_hold(fmt, variant):
                wc.save(os.path.join(folder, FILES[fmt]), spec, weights, fmt=fmt)
        print(f"[bench] wrote {variant} ({spec.param_count():,} parameters) in {len(formats)} formats",
              file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default=",".join(FILES), help="comma-separated formats (default: all)")
    p.add_argument("--repeat", type=int, default=1, help="runs per pair; the fastest wall time is kept")
    p.add_argument("--workdir", help="where the checkpoints go (default: a temporary directory, removed)")
    p.add_argument("--make-sources", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.make_sources:  # in a child, so that this process stays small: a child's peak RSS counts the
        make_sources(args.make_sources, formats)  # parent's memory at fork time
        return 0
    work = args.workdir or tempfile.mkdtemp(prefix="alexnet-convert-bench-")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    py = sys.executable
    try:
        subprocess.run([py, os.path.abspath(__file__), "--make-sources", work, "--formats", ",".join(formats)],
                       check=True, env=env)
        sources = {(v, f): os.path.join(work, v, FILES[f]) for v in ("torchvision", "slim-v2") for f in formats
                   if f != "slim" or v == "slim-v2"}
        rows = []

        # the yardstick: plain torch.load + torch.save of the same .pth
        pth = sources.get(("torchvision", "torchvision"))
        if pth:
            copy = os.path.join(work, "yardstick.pth")
            wall, imp, t, rss = best_of("import torch", f"torch.save(torch.load({pth!r}, weights_only=True), {copy!r})",
                                        args.repeat, env)
            rows.append(("torch.load + torch.save (yardstick)", "61,100,840", wall, imp, t, rss, size_mib(copy)))
            remove(copy)

        pairs = [(a, b) for a in formats for b in formats if a != b]
        pairs += [("canonical", f"{b}:{name}") for b, name in EXTRA_DESTINATIONS.items() if b in formats]
        for a, b in pairs:
            b_fmt, _, b_file = b.partition(":")
            variant = "slim-v2" if "slim" in (a, b_fmt) else "torchvision"
            src = sources[(variant, a)]
            dst = os.path.join(work, variant, "out-" + (b_file or FILES[b_fmt]))
            modules = ["weights_convert", "alexnet_cli.main", *IMPORTS[a], *IMPORTS[b_fmt]]
            imports = "; ".join(f"import {m}" for m in dict.fromkeys(modules))
            argv = [src, dst, "--from", a, "--to", b_fmt, "-q"] + ["--variant", variant]
            work_code = f"assert alexnet_cli.main.main(['convert', *{argv!r}]) == 0"
            wall, imp, t, rss = best_of(imports, work_code, args.repeat, env)
            params = "50,303,912" if variant == "slim-v2" else "61,100,840"
            rows.append((f"{a} -> {b_file or b_fmt}", params, wall, imp, t, rss, size_mib(dst)))
            print(f"[bench] {rows[-1][0]}: {wall:.1f} s ({t:.2f} s converting), {rss:.0f} MiB",
                  file=sys.stderr, flush=True)
            remove(dst)

        print(f"\nalexnet convert, full-size checkpoints, one fresh process per conversion (best of {args.repeat}): "
              f"wall = the whole process; imports = Python packages the two formats need; converting = the rest")
        head = ("conversion", "parameters", "wall s", "imports s", "converting s", "peak RSS MiB", "output MiB")
        table = [head] + [(r[0], r[1], f"{r[2]:.2f}", f"{r[3]:.2f}", f"{r[4]:.2f}", f"{r[5]:.0f}", f"{r[6]:.1f}")
                          for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
        for i, row in enumerate(table):
            print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
            if i == 0:
                print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
