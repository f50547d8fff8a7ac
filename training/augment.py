"""The paper's image transforms in numpy: the 256x256 base image, random crops and flips, PCA lighting, the
variant's normalisation, and the 10-crop test views with their averaged softmax.

Krizhevsky et al. 2012: section 2 (short side to 256, centre 256x256 patch), section 4.1 (random 224x224
patches and their horizontal reflections; PCA colour noise; at test time five patches and their reflections,
softmax averaged). Images are uint8 (H, W, 3) RGB until `to_batch` turns a stack of views into float32 NCHW.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from alexnet_parity.common import Preprocessing, Spec

# Section 4.1's PCA of ImageNet RGB pixels (in [0, 1] units), as published with fb.resnet.torch's lighting
# transform: eigenvalues and the eigenvectors as columns, rows R, G, B.
PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]])
LIGHTING_STD = 0.1  # alpha ~ N(0, 0.1)


def base_size(spec: Spec) -> int:
    """Side of the square base image the crops are taken from: the variant's resize (256) scaled by
    input_size / crop, so an input_size override keeps the paper's crop-to-image ratio (224 of 256, 227 of
    256); at the default sizes this is exactly 256."""
    pre = spec.preprocessing
    return max(spec.input_size, int(round(pre.resize * spec.input_size / pre.crop)))


def resize_short(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (Pillow, antialiased when shrinking) so the shorter side is `size`; the longer side is
    truncated as torchvision's Resize does. Small images such as CIFAR's 32x32 are scaled up the same way."""
    h, w = image.shape[:2]
    if min(h, w) == size:
        return image
    new_h, new_w = _short_side(h, w, size)
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def _short_side(h: int, w: int, size: int) -> tuple[int, int]:
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


# an image longer than this many times its short side is not resized whole before the centre crop (a 1 x 10^7
# strip would become 256 x 2.5 * 10^9 pixels): only the region the crop keeps is resampled
MAX_ASPECT = 8


def center_offset(length: int, size: int) -> int:
    return int(round((length - size) / 2.0))  # torchvision's CenterCrop rounding


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {h}x{w} image")
    top, left = center_offset(h, size), center_offset(w, size)
    return image[top:top + size, left:left + size]


def resized_center(image: np.ndarray, short: int, crop: int) -> np.ndarray:
    """center_crop(resize_short(image, short), crop), torchvision's Resize + CenterCrop. Past MAX_ASPECT only the
    crop's region is resampled (Pillow's box), which agrees with the whole resize to within 1 per pixel
    (the filter's weights are computed from other float offsets)."""
    h, w = image.shape[:2]
    new_h, new_w = _short_side(h, w, short)
    if max(new_h, new_w) <= MAX_ASPECT * short or min(h, w) == short:
        return center_crop(resize_short(image, short), crop)
    if new_h < crop or new_w < crop:
        raise ValueError(f"cannot centre-crop {crop}x{crop} from a {new_h}x{new_w} image")
    top, left = center_offset(new_h, crop), center_offset(new_w, crop)
    sy, sx = h / new_h, w / new_w
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
    return np.asarray(Image.fromarray(image).resize((crop, crop), Image.BILINEAR, box=box))


def base_image(image: np.ndarray, size: int) -> np.ndarray:
    """Section 2: short side to `size`, then the central size x size patch."""
    return resized_center(image, size, size)


def view(base: np.ndarray, top: int, left: int, size: int, flip: bool) -> np.ndarray:
    """The size x size patch at (top, left), mirrored left-right when `flip`."""
    patch = base[top:top + size, left:left + size]
    return patch[:, ::-1] if flip else patch


@dataclass(frozen=True)
class Draws:
    """The random choices for one training batch, one row per image: everything needed to redo it."""
    top: np.ndarray  # int64 (B,)
    left: np.ndarray  # int64 (B,)
    flip: np.ndarray  # bool (B,)
    alpha: np.ndarray  # float64 (B, 3): the lighting coefficients, already times the noise std


def draw(rng: np.random.Generator, n: int, base: int, size: int, lighting_std: float = LIGHTING_STD,
         flip: bool = True) -> Draws:
    """Crop offsets uniform over every position, a fair coin per flip, alpha ~ N(0, lighting_std). The same
    number of values is drawn whatever the options, so turning one off leaves the others unchanged."""
    top = rng.integers(0, base - size + 1, n)
    left = rng.integers(0, base - size + 1, n)
    flips = rng.random(n) < 0.5
    alpha = rng.standard_normal((n, 3)) * lighting_std
    return Draws(top=top, left=left, flip=flips & flip, alpha=alpha)


def lighting_offset(alpha: np.ndarray, pixel_range: float = 1.0) -> np.ndarray:
    """RGB offset added to every pixel of an image: eigvec @ (alpha * eigval), in pixel_range units.
    alpha (..., 3) -> (..., 3)."""
    weights = np.asarray(alpha, np.float64) * PCA_EIGVAL
    # image by image with the formula's own matrix-vector product: bit-for-bit the definition
    rows = [PCA_EIGVEC @ w for w in weights.reshape(-1, 3)]
    return np.asarray(rows).reshape(weights.shape) * pixel_range


def ten_crop_positions(base: int, size: int) -> list[tuple[int, int, bool]]:
    """(top, left, flip) of the paper's ten test views: corners top-left, top-right, bottom-left,
    bottom-right, the centre; then the same five mirrored."""
    far, mid = base - size, center_offset(base, size)
    five = [(0, 0), (0, far), (far, 0), (far, far), (mid, mid)]
    return [(t, l, False) for t, l in five] + [(t, l, True) for t, l in five]


def ten_crop(base: np.ndarray, size: int) -> np.ndarray:
    """(10, size, size, 3) uint8 views of one base image."""
    return np.stack([view(base, t, l, size, f) for t, l, f in ten_crop_positions(base.shape[0], size)])


def _affine(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """to_batch computes x * scale + shift per channel in the variant's channel order."""
    order = slice(None, None, -1) if pre.color_order == "BGR" else slice(None)  # a view, not a gather
    std = np.asarray(pre.std, np.float64)
    return pre.pixel_range / 255.0 / std, -np.asarray(pre.mean, np.float64) / std, order


def to_batch(views: np.ndarray, pre: Preprocessing, offsets: np.ndarray | None = None,
             mean_patches: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB views -> float32 (N, 3, H, W): pixels to the variant's range, plus the RGB
    lighting offsets (N, 3) in that range, channels in the variant's order, minus mean, over std.
    mean_patches (N, 3, H, W), in the variant's order and range (mean_patch's): subtracted instead of mean."""
    scale, shift, order = _affine(pre)
    x = views.transpose(0, 3, 1, 2)[:, order].astype(np.float32)  # one copy into NCHW, variant order
    shift = np.broadcast_to(shift, (len(views), 3)).copy()
    std = np.asarray(pre.std, np.float64)
    if mean_patches is not None:
        shift += np.asarray(pre.mean, np.float64) / std  # the image's mean replaces the per-channel one
    if offsets is not None:
        shift += offsets[:, order] / std
    x *= scale.astype(np.float32)[None, :, None, None]
    x += shift.astype(np.float32)[:, :, None, None]
    if mean_patches is not None:
        x -= (np.asarray(mean_patches, np.float64) / std[None, :, None, None]).astype(np.float32)
    return x


def mean_patch(mean_image: np.ndarray, frame: tuple[int, int], top: int, left: int, size: int,
               flip: bool = False) -> np.ndarray:
    """The (3, size, size) patch of a mean image (3, M, N) under the view at (top, left) of a frame (h, w): Caffe's
    DataTransformer subtracts the mean image from the 256x256 image and then crops both at the same offset
    (mirroring after the subtraction). The mean image covers the frame's central M x N region: all of a base
    image (Batches), the centre of a short-side-resized one (predict; all of it when the image is square)."""
    m, n = mean_image.shape[1:]
    h, w = frame
    if h < m or w < n:
        raise ValueError(f"the mean image is {m}x{n}, larger than the {h}x{w} image it is subtracted from")
    top, left = top - center_offset(h, m), left - center_offset(w, n)
    if not (0 <= top <= m - size and 0 <= left <= n - size):
        raise ValueError(f"a {size}x{size} view at ({top}, {left}) of the {m}x{n} mean image is outside it")
    patch = mean_image[:, top:top + size, left:left + size]
    return patch[:, :, ::-1] if flip else patch


def resized_shape(shape: tuple[int, int], short: int) -> tuple[int, int]:
    """(h, w) of an image of `shape` after resize_short(image, short)."""
    h, w = shape[:2]
    return (h, w) if min(h, w) == short else _short_side(h, w, short)


def to_pixels(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Inverse of to_batch without lighting: float32 (N, 3, H, W) -> float64 (N, H, W, 3) RGB in 0..255,
    for looking at a batch."""
    scale, shift, order = _affine(pre)
    x = (x.astype(np.float64) - shift[:, None, None]) / scale[:, None, None]
    return x[:, order].transpose(0, 2, 3, 1)  # reversing is its own inverse


def average_softmax(logits: np.ndarray) -> np.ndarray:
    """(B, V, K) logits of V views per image -> (B, K) mean of the V softmax distributions (the paper
    averages the predictions, not the logits). float64."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 3:
        raise ValueError(f"average_softmax takes (batch, views, classes) logits, got shape {z.shape}")
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p.mean(axis=1)
