"""`alexnet predict IMAGE`: the top classes of one image, preprocessed as the weights expect (short side
resized, centre crop, channel order, range and mean/std as the file records them, else as its format's
convention or its variant's own pipeline: see eval_cmd.load_classifier; --mean-image FILE subtracts a mean image
the Caffe way instead of the per-channel mean). A 1000-output
classifier is named with the ILSVRC-2012 class names; any other with class indices."""
from __future__ import annotations

from importlib import resources

import sys

import numpy as np


def add_arguments(p):
    from alexnet_parity.training.frameworks import framework_help
    p.add_argument("image", metavar="IMAGE", help="an image file Pillow reads (JPEG, PNG, ...)")
    p.add_argument("--weights", required=True, metavar="FILE", help="a checkpoint in any format alexnet convert reads")
    p.add_argument("--framework", metavar="F", help=framework_help())
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes to print (default 5)")
    p.add_argument("--variant", metavar="V", help="the variant the file holds, where it does not record it")
    from .eval_cmd import add_preprocessing_argument
    add_preprocessing_argument(p)


def imagenet_classes() -> list[str]:
    """The 1000 ILSVRC-2012 class names in the index order of every ImageNet AlexNet (0 tench ... 999
    toilet_tissue)."""
    text = resources.files("alexnet_parity.training").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def preprocess(path: str, spec, mean_image=None) -> np.ndarray:
    """float32 (1, 3, S, S): short side to the variant's resize (256 scaled by input_size / crop), centre
    S x S crop (torchvision's Resize + CenterCrop), then the variant's channel order and normalisation.
    mean_image (3, M, M): subtracted from the resized image's central M x M square before the crop, cut at the
    crop's offset (Caffe's DataTransformer; for a square image, exactly its resize to M x M), not the mean."""
    from alexnet_parity.training import augment
    from alexnet_parity.training.sources import decode_image

    image, base, size = decode_image(path), augment.base_size(spec), spec.input_size
    view = augment.resized_center(image, base, size)
    patches = None
    if mean_image is not None:
        h, w = augment.resized_shape(image.shape, base)
        top, left = augment.center_offset(h, size), augment.center_offset(w, size)
        patches = augment.mean_patch(mean_image, (h, w), top, left, size)[None]
    return augment.to_batch(view[None], spec.preprocessing, mean_patches=patches)


def run(args) -> int:
    from .eval_cmd import load_classifier

    if args.top < 1:
        raise ValueError(f"--top must be positive, got {args.top}")
    spec, model, told, mean_image = load_classifier(args.weights, args.variant, args.framework, args.preprocessing,
                                                    args.mean_image)
    x = preprocess(args.image, spec, mean_image)
    print(told, file=sys.stderr)  # once the image is known good: a bad one stays a one-line error
    z = np.asarray(model.logits(x), np.float64)[0]
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    names = imagenet_classes() if spec.num_classes == 1000 else None
    for rank, c in enumerate(np.argsort(-probs, kind="stable")[:args.top], 1):
        print(f"{rank:>2}. {probs[c]:.4f}  " + (f"{c:>3} {names[c]}" if names else f"class {c}"))
    return 0
