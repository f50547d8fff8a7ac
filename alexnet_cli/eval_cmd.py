"""`alexnet eval`: top-1 and top-5 of a checkpoint on a data set, from the centre crop or the paper's ten
views (four corners, centre, and their mirrors) with their softmax averaged."""
from __future__ import annotations

import json
import sys

from . import _data


def add_arguments(p):
    from alexnet_parity.training.frameworks import framework_help
    p.add_argument("--weights", required=True, metavar="FILE", help="a checkpoint in any format alexnet convert "
                   "reads (a training run's model.safetensors, a torchvision .pth, a .caffemodel ...)")
    p.add_argument("--data", required=True, metavar="PATH", help=_data.HELP + "; of a train/val folder, val/; "
                   "of CIFAR-10, test_batch.bin; synthetic images are drawn apart from the training ones")
    p.add_argument("--framework", metavar="F", help=framework_help())
    p.add_argument("--ten-crop", action="store_true", help="the paper's 10 views per image, softmax averaged")
    p.add_argument("--variant", metavar="V", help="the variant the file holds, where it does not record it")
    add_preprocessing_argument(p)
    p.add_argument("--batch", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="threads decoding images (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_preprocessing_argument(p) -> None:
    p.add_argument("--preprocessing", choices=("file", "variant"), default="file",
                   help="file (default): the input the weights expect, as the file records it (a canonical, hub, "
                        ".weights.h5 or ONNX file, a caffemodel's deploy .prototxt), else its format's convention "
                        "(caffemodel: BGR 0-255 minus the mean; torchvision .pth: RGB 0-1 mean/std), else the "
                        "variant's; variant: always the variant's own")
    p.add_argument("--mean-image", metavar="FILE", help="subtract this mean image the Caffe way (after the resize, "
                   "before the crop, cut at the crop's offset) instead of the per-channel mean: a Caffe "
                   ".binaryproto (ilsvrc_2012_mean.binaryproto: 3x256x256, BGR, 0-255) or a .npy (3, H, W), in the "
                   "weights' channel order and range; needed where the file records a mean image (its shape and "
                   "sha256 are checked); 'pixel' uses the record's per-channel mean instead, an approximation")


def load_classifier(path: str, variant: str | None, framework: str | None, preprocessing: str = "file",
                    mean_image: str | None = None):
    """(spec, inference adapter, a line saying the input, mean image or None) for a weights file holding a
    classifier (fc8 included). The spec's preprocessing is the one the file's weights expect
    (preprocessing="file") or the variant's ("variant"). mean_image: a mean image file to subtract (checked
    against the one the file records, if any), or "pixel" for the per-channel mean where the file records a
    mean image; a file that records one and is given neither is refused (a one-line error naming the option):
    its per-channel mean is an approximation, used only when asked for."""
    import dataclasses
    import os

    from alexnet_parity import weights_convert
    from alexnet_parity.training import frameworks
    from alexnet_parity.weights_convert import preprocessing as prep

    framework = frameworks.check_framework(framework) if framework else frameworks.default_framework()
    if not os.path.exists(path):
        raise FileNotFoundError(f"--weights {path}: no such file")
    spec, weights, fmt = weights_convert.load_as(path, variant=variant)
    if not spec.include_top:
        raise ValueError(f"--weights {path} holds a feature extractor ({spec.describe()}): no classifier to evaluate")
    pre, where = (spec.preprocessing, "variant") if preprocessing == "variant" else \
        weights_convert.preprocessing_of(path, spec, fmt)
    told = {"file": "as the file records", "format": pre.source, "variant": f"the {spec.variant} variant's own"}[where]
    array = None
    if mean_image not in (None, "pixel"):
        pre, array = read_mean_image_for(spec, pre, mean_image)
        told += f"; the mean image {mean_image}"
    elif pre.mean_image is not None and mean_image == "pixel":
        pre, told = dataclasses.replace(pre, mean_image=None), told + "; its per-channel mean, by --mean-image pixel"
    elif pre.mean_image is not None:
        c, h, w = pre.mean_image.shape
        raise ValueError(f"--weights {path} expects the {c}x{h}x{w} mean image sha256 {pre.mean_image.sha256} "
                         f"subtracted: give it with --mean-image FILE (.binaryproto or .npy), or --mean-image pixel "
                         f"for its per-channel mean {'/'.join(f'{m:g}' for m in pre.mean)} (an approximation)")
    model = frameworks.make_adapter(framework, spec, weights, lr=None)
    return (dataclasses.replace(spec, preprocessing=pre), model, f"input: {prep.describe(pre)} ({told})", array)


def read_mean_image_for(spec, pre, path: str):
    """(pre subtracting the mean image at path, that image float32 (3, B, B)): checked against the image pre's
    record names, and its size against the B x B image spec's views are cut from (one-line errors naming it)."""
    import dataclasses

    from alexnet_parity.training import augment
    from alexnet_parity.weights_convert import preprocessing as prep

    array = prep.read_mean_image(path)
    pre = prep.with_mean_image(pre, array, path)
    base = augment.base_size(dataclasses.replace(spec, preprocessing=pre))
    if array.shape[1:] != (base, base):
        raise ValueError(f"--mean-image {path}: is {array.shape[1]}x{array.shape[2]}, but {spec.describe()} is "
                         f"cropped from a {base}x{base} image (resize {pre.resize}, crop {pre.crop}): its mean image "
                         f"is 3x{base}x{base}")
    return pre, array


def run(args) -> int:
    from alexnet_parity.training.loop import evaluate

    if args.batch < 1 or args.workers < 1:
        raise ValueError(f"--batch and --workers must be positive, got {args.batch}, {args.workers}")
    spec, model, told, mean_image = load_classifier(args.weights, args.variant, args.framework, args.preprocessing,
                                                    args.mean_image)
    source = _data.eval_source(args.data, spec.num_classes)
    if source.num_classes != spec.num_classes:
        # an image folder's labels are its sorted folder indices: they mean the model's classes only when
        # the folder has one class folder per output, in the model's order
        names = ", ".join(source.classes[:5]) + (", ..." if source.num_classes > 5 else "")
        raise ValueError(f"--data {args.data} has {source.num_classes} classes ({names}) but --weights "
                         f"{args.weights} has {spec.num_classes} outputs: its labels cannot match the model's "
                         f"classes; evaluate on data with one class folder per output, in the model's order")
    print(told, file=sys.stderr)  # once the input is known good: a bad one stays a one-line error
    view = "10-crop" if args.ten_crop else "centre crop"
    r = evaluate(model.logits, source, spec, args.batch, ten_crop=args.ten_crop, label=f"eval ({view})",
                 threads=args.workers, mean_image=mean_image)
    k5 = min(5, spec.num_classes)
    if args.json:
        print(json.dumps({"weights": args.weights, "spec": spec.describe(), "framework": model.framework,
                          "views": view, "images": r["count"], "loss": r["loss"], "top1": r["top1"],
                          "top5": r["top5"], "top1_hits": r["hits1"], "top5_hits": r["hits5"]}))
        return 0
    print(f"{spec.describe()} in {model.framework}, {view}, {r['count']} images", file=sys.stderr)
    print(f"top-1 {r['top1']:.4f}  ({r['hits1']}/{r['count']})")
    print(f"top-5 {r['top5']:.4f}  ({r['hits5']}/{r['count']})"
          + (f"  (only {spec.num_classes} classes: top-{k5})" if k5 < 5 else ""))
    print(f"loss  {r['loss']:.4f}")
    return 0
