"""`alexnet convert SRC DST`: checkpoint format to checkpoint format, through canonical weights, bit-exact.

Imports only what the two formats need (a .pth -> .caffemodel conversion never imports TensorFlow or JAX);
--verify also builds each side's framework model and runs one input through both. The preprocessing the
weights expect travels along (weights_convert.preprocessing_of -> save(preprocessing=)): recorded in DST where
its format holds metadata; a caffe DST gets its deploy net, NAME.prototxt, beside NAME.caffemodel.
"""
from __future__ import annotations

import os
import sys
import time

LARGE = 32 << 20  # progress lines on stderr for sources from 32 MiB up (a full AlexNet is 230 MiB)
TOLERANCE = 1e-4


def add_arguments(p):
    from alexnet_parity import weights_convert
    from alexnet_parity.common import VARIANTS
    from alexnet_parity.common.engines import engine_for_format

    import argparse

    formats = ", ".join(weights_convert.FORMATS)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "formats (--verify runs the engine after the colon):\n" + "\n".join(
        f"  {f.name:<12} {engine_for_format(f.name).name + ':':<10} {f.files}"
        + ("" if f.holds == "all" else f" ({f.holds} only)") for f in weights_convert.FORMATS.values()) + (
        "\n\nhub: a Hugging Face-style folder (config.json, model.safetensors, a generated README.md model card), "
        "e.g.\n  alexnet convert bvlc_alexnet.caffemodel alexnet-caffe/ --to hub"
        "\n\nThe variant is read from the file where it records it (canonical, keras, flax Orbax, caffe's layer "
        "order),\nelse inferred from the tensor shapes; caffe, caffenet and paper share shapes, so a file that "
        "records\nnothing needs --variant.")
    p.add_argument("src", metavar="SRC", help="checkpoint to read (file, Orbax directory or TF checkpoint prefix)")
    p.add_argument("dst", metavar="DST", help="checkpoint to write; an existing DST is replaced atomically, and only "
                   "when it is a checkpoint of the same format (anything else is refused, never deleted)")
    p.add_argument("--from", dest="src_format", metavar="FMT", help=f"format of SRC (default: from its name): {formats}")
    p.add_argument("--to", dest="dst_format", metavar="FMT", help=f"format of DST (default: from its name): {formats}")
    p.add_argument("--variant", metavar="V", help=f"the variant SRC holds, overriding what the file says or its "
                   f"shapes imply: {', '.join(VARIANTS)}")
    p.add_argument("--input-size", type=int, metavar="N", help="input size the weights are for, where the file "
                   "does not record it and fc6 fits several")
    p.add_argument("--prototxt", metavar="FILE", help="caffe: the net definition (deploy or train_val) that goes "
                   "with SRC; gives or confirms the variant")
    p.add_argument("--mean-image", metavar="FILE", help="record in DST that its weights expect this mean image "
                   "subtracted (a Caffe .binaryproto or a .npy: its shape and sha256, not its values), as BVLC's "
                   "were trained minus ilsvrc_2012_mean.binaryproto; predict and eval then need it")
    p.add_argument("--caffe-container", choices=("layer", "layers"), default="layer",
                   help="caffe output: current 'layer' messages (default) or V1 'layers', as bvlc_alexnet.caffemodel")
    p.add_argument("--external-data", action="store_true",
                   help="onnx output: the weights in DST.data beside the model instead of inline")
    p.add_argument("--verify", action="store_true", help="read DST back (must be bit-identical), run one input "
                   "through the source and target frameworks' models and print the max relative error")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"--verify fails above this relative error (default {TOLERANCE:g})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _one_line_warnings() -> None:
    """A checkpoint's warnings (e.g. --variant contradicting the file) as one stderr line each."""
    import warnings

    from alexnet_parity.weights_convert._common import CheckpointWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CheckpointWarning):
            print(f"alexnet convert: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def run(args) -> int:
    from alexnet_parity import weights_convert as wc
    from alexnet_parity.weights_convert._common import file_size

    _one_line_warnings()
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"[convert] {msg}", file=sys.stderr, flush=True))
    src_fmt = wc.get_format(args.src_format).name if args.src_format else wc.guess_format(args.src, reading=True)
    dst_fmt = wc.get_format(args.dst_format).name if args.dst_format else wc.guess_format(args.dst, reading=False)
    if args.prototxt and src_fmt != "caffe":
        raise ValueError(f"--prototxt goes with a caffe SRC, not {src_fmt}")
    large = file_size(args.src) >= LARGE if os.path.exists(args.src) or src_fmt == "slim" else False
    if not large:
        say = (lambda msg: None)

    t0 = time.perf_counter()
    if large:
        label = src_fmt if args.src_format or src_fmt != "torch" else "torch or torchvision, by its keys"
        say(f"reading {args.src} ({label}, {_mib(file_size(args.src))}) ...")
    options = {"prototxt": args.prototxt} if args.prototxt else {}
    spec, weights, src_fmt = wc.load_as(args.src, args.src_format, args.variant, input_size=args.input_size,
                                        **options)
    pre, where = wc.preprocessing_of(args.src, spec, src_fmt, **options)
    if args.mean_image:
        from .eval_cmd import read_mean_image_for
        pre = read_mean_image_for(spec, pre, args.mean_image)[0]
    params = sum(w.size for w in weights.values())
    say(f"read {len(weights)} tensors, {params:,} parameters: {spec.describe()} ({time.perf_counter() - t0:.1f} s)")

    t1 = time.perf_counter()
    say(f"writing {args.dst} ({dst_fmt}) ...")
    save_options = {"container": args.caffe_container, "deploy": True} if dst_fmt == "caffe" else {}
    if dst_fmt == "hub":
        from alexnet_parity.weights_convert.pretrained import origin_of
        save_options["origin"] = origin_of(args.src, src_fmt)
    if args.external_data:
        if dst_fmt != "onnx":
            raise ValueError(f"--external-data goes with an onnx DST, not {dst_fmt}")
        save_options["external_data"] = True
    wc.save(args.dst, spec, weights, fmt=dst_fmt, preprocessing=pre, **save_options)
    say(f"wrote {_mib(file_size(args.dst))} ({time.perf_counter() - t1:.1f} s)")  # a file, folder or TF prefix
    print(f"{args.dst}: {dst_fmt}, {spec.describe()}, {params:,} parameters (from {src_fmt} {args.src})")
    from alexnet_parity.weights_convert.preprocessing import describe

    kept = "recorded in DST" if wc.get_format(dst_fmt).keeps_preprocessing else "which DST's format cannot record"
    say(f"the input the weights expect: {describe(pre)} ({where}: {pre.source}), {kept}")

    if args.verify:
        return verify(args, spec, weights, src_fmt, dst_fmt, say, pre)
    return 0


def verify(args, spec, weights, src_fmt, dst_fmt, say, pre=None) -> int:
    """Read DST back (bit-identical, same spec), then run one input through the engine whose native format
    the source is (the numpy reference for a format no engine reads natively) and the target's, each on the
    weights read from its own file; print the max relative error."""
    import numpy as np

    from alexnet_parity import weights_convert as wc
    from alexnet_parity.common.engines import engine_for_format
    spec2, back, _ = wc.load_as(args.dst, dst_fmt, spec.variant, input_size=spec.input_size)
    if spec2 != spec:
        print(f"verify: FAILED: {args.dst} reads back as {spec2.describe()}, not {spec.describe()}")
        return 1
    changed = [k for k in weights if back[k].dtype != weights[k].dtype or not np.array_equal(back[k], weights[k])]
    if changed:
        print(f"verify: FAILED: tensor {changed[0]!r} differs after the round trip")
        return 1
    if pre is not None and wc.get_format(dst_fmt).keeps_preprocessing \
            and wc.preprocessing_of(args.dst, spec2, dst_fmt)[0] != pre:
        print(f"verify: FAILED: {args.dst} records another preprocessing than {args.src}'s")
        return 1
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape)).astype(np.float32)
    runners = (engine_for_format(src_fmt), engine_for_format(dst_fmt))
    say(f"running one batch through {_label(runners[0])} and {_label(runners[1])}")
    a = _activations(runners[0], spec, weights, x)
    b = _activations(runners[1], spec, back, x)
    errors = {name: float(np.max(np.abs(a[name] - b[name])) / max(float(np.max(np.abs(b[name]))), 1e-30))
              for name in a if name in b}
    last = spec.layers[-1].name
    worst = max(errors, key=errors.get)
    ok = errors[worst] <= args.tolerance
    print(f"verify: {len(back)} tensors bit-identical; {_label(runners[0])} vs {_label(runners[1])}: "
          f"max relative error {errors[worst]:.2e} (at {worst}), {last} {errors[last]:.2e}"
          + ("" if ok else f" -- FAILED, above {args.tolerance:g}"))
    return 0 if ok else 1


def _label(engine) -> str:
    return "numpy reference" if engine.oracle else engine.name


def _activations(engine, spec, weights, x):
    import numpy as np

    return {k: np.asarray(v, dtype=np.float64) for k, v in engine.run_activations(spec, weights, x).items()}
