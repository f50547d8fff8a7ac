"""`alexnet fetch NAME`: download a pinned public checkpoint (resumable, digest-checked, cached) and
optionally convert it for a framework. The registry is weights_convert/pretrained.py."""
from __future__ import annotations

import sys


def add_arguments(p):
    import argparse

    from alexnet_parity.weights_convert.pretrained import CHECKPOINTS, native_files

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "checkpoints:\n" + "\n".join(
        f"  {c.name:<24} {c.variant:<12} {c.title}" + ("" if c.fetchable else " (listed only)")
        for c in CHECKPOINTS.values()) + (
        "\n\nThe cache is ALEXNET_HOME, else $XDG_CACHE_HOME/alexnet-parity, else ~/.cache/alexnet-parity. "
        "A download\nresumes where an interrupted one stopped and is used only once its pinned digest matches.")
    p.add_argument("name", metavar="NAME", nargs="?", help="the checkpoint (see below)")
    p.add_argument("--to", metavar="FILE", help="also convert to FILE (format from its name), or into a folder "
                   "with --framework's file name")
    native = native_files()
    p.add_argument("--framework", choices=tuple(native), help="convert for this framework: "
                   + ", ".join(f"{k} {v[1]}" for k, v in native.items()) + " (in --to's folder, default here)")
    p.add_argument("--cache-dir", metavar="DIR", help="the cache (default: ALEXNET_HOME or the user's cache)")
    p.add_argument("--offline", action="store_true", help="use only the cache; never reach the network")
    p.add_argument("--list", action="store_true", help="print each checkpoint's URL, digest, accuracy and license")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def _list() -> int:
    from alexnet_parity.weights_convert.pretrained import CHECKPOINTS, cached_path

    for c in CHECKPOINTS.values():
        acc = f"top-1 {c.top1} / top-5 {c.top5}" if c.top1 is not None else "accuracy not claimed"
        digest = f"{c.digest_algorithm} {c.digest}" if c.digest else "no digest"
        print(f"{c.name}: {c.title}; variant {c.variant}; {c.url}; {digest}; {acc}; license {c.license}"
              + (f"; cached at {cached_path(c.name, None)}" if c.fetchable and _exists(cached_path(c.name, None))
                 else ""))
    return 0


def _exists(path) -> bool:
    import os

    return os.path.exists(path)


def run(args) -> int:
    from alexnet_parity.weights_convert import pretrained

    if args.list:
        return _list()
    if not args.name:
        raise ValueError(f"give a checkpoint NAME: {pretrained.known()}")
    entry = pretrained.get_checkpoint(args.name)
    out, fmt = pretrained.destination(entry.name, args.to, args.framework)  # bad --to fails before downloading
    path = pretrained.fetch(entry.name, args.cache_dir, offline=args.offline, progress=not args.quiet)
    if out is None:
        print(path)
        return 0
    import os

    from alexnet_parity import weights_convert as wc

    if args.to and args.to.endswith(os.sep):  # a folder named as one may not exist yet
        os.makedirs(args.to, exist_ok=True)
    if not args.quiet:
        print(f"[fetch] converting {path} ({entry.format}) to {out} ({fmt}) ...", file=sys.stderr, flush=True)
    spec, weights = wc.load(path, fmt=entry.format, variant=entry.variant)
    pre, _ = wc.preprocessing_of(path, spec, entry.format)  # a caffemodel's is Caffe's, a .pth torchvision's
    wc.save(out, spec, weights, fmt=fmt, preprocessing=pre)
    params = sum(w.size for w in weights.values())
    print(f"{out}: {fmt}, {spec.describe()}, {params:,} parameters (from {entry.name}, "
          f"{entry.digest_algorithm} verified, {path})")
    return 0
