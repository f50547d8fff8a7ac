"""Batches: a source turned into the paper's float32 NCHW batches for one variant, the same for every
framework. Every random choice comes from numpy Generators seeded by (seed, epoch) for the image order and
(seed, epoch, batch) for the crops, flips and lighting, so any batch of any epoch can be rebuilt on its own:
resuming mid-epoch is `for i in range(k, len(batches)): x, y = batches[i]`."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from alexnet_parity.common import Spec

from . import augment
from .sources import Source


class Batches:
    """(x float32 (B, 3, S, S), y int64 (B,)) for S = spec.input_size, in the variant's channel order, range
    and normalisation.

    train=True: the epoch's shuffled order; from each base image (short side to base_size(spec), the central
    square; 256 at default sizes) a random S x S crop, a coin-flip mirror and PCA lighting noise.
    train=False: the source's order and the centre crop; with ten_crop=True x is (B, 10, 3, S, S), the four
    corners, the centre and their mirrors (average their predictions with augment.average_softmax).
    Small images (CIFAR's 32x32) are scaled up bilinearly to the base size before cropping, like any other.
    `resize` overrides the base size; `threads` decodes a batch's images in parallel (Pillow releases the GIL).
    mean_image (3, base, base), in the variant's channel order and range: subtracted from each base image
    before its views are cut (the patch under each view, augment.mean_patch) instead of the per-channel mean.
    """

    def __init__(self, source: Source, spec: Spec, batch_size: int, train: bool, seed: int = 0, epoch: int = 0,
                 *, ten_crop: bool = False, drop_last: bool = False, lighting_std: float = augment.LIGHTING_STD,
                 flip: bool = True, resize: int | None = None, threads: int = 0, mean_image=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if ten_crop and train:
            raise ValueError("ten_crop is a test-time view; use it with train=False")
        if seed < 0 or epoch < 0:
            raise ValueError(f"seed and epoch must be >= 0, got {seed}, {epoch}")
        if spec.include_top and source.num_classes > spec.num_classes:
            raise ValueError(f"the source has {source.num_classes} classes but the {spec.variant} spec has "
                             f"{spec.num_classes} outputs; pass num_classes={source.num_classes} to get_spec")
        self.source, self.spec, self.batch_size, self.train = source, spec, int(batch_size), bool(train)
        self.seed, self.epoch, self.ten_crop, self.drop_last = int(seed), int(epoch), ten_crop, drop_last
        self.lighting_std, self.flip, self.threads = float(lighting_std), flip, threads
        self.base = augment.base_size(spec) if resize is None else int(resize)
        if self.base < spec.input_size:
            raise ValueError(f"resize {self.base} is smaller than the input size {spec.input_size}")
        if mean_image is not None and tuple(mean_image.shape) != (3, self.base, self.base):
            raise ValueError(f"the mean image is {'x'.join(map(str, mean_image.shape))}, but the views are cut "
                             f"from {self.base}x{self.base} base images: it must be 3x{self.base}x{self.base}")
        self.mean_image = mean_image
        n = len(source)
        self.order = (np.random.default_rng([self.seed, self.epoch, 0]).permutation(n) if train
                      else np.arange(n))

    def __len__(self) -> int:
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def indices(self, i: int) -> np.ndarray:
        """Source indices of batch i."""
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range for {len(self)} batches")
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]

    def draws(self, i: int) -> augment.Draws:
        """The crops, flips and lighting alphas of training batch i (a pure function of seed, epoch, i)."""
        rng = np.random.default_rng([self.seed, self.epoch, 1, i])
        return augment.draw(rng, len(self.indices(i)), self.base, self.spec.input_size, self.lighting_std,
                            self.flip)

    def _bases(self, idx: np.ndarray) -> list[np.ndarray]:
        def load(j):
            return augment.base_image(self.source.image(int(j)), self.base)
        if self.threads > 1 and len(idx) > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                return list(pool.map(load, idx))
        return [load(j) for j in idx]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.indices(i)
        bases, size, pre = self._bases(idx), self.spec.input_size, self.spec.preprocessing
        y = self.source.labels[idx].astype(np.int64)
        if self.train:
            d = self.draws(i)
            views = np.stack([augment.view(b, t, l, size, f) for b, t, l, f in zip(bases, d.top, d.left, d.flip)])
            return augment.to_batch(views, pre, augment.lighting_offset(d.alpha, pre.pixel_range),
                                    self._mean_patches(zip(d.top, d.left, d.flip))), y
        if self.ten_crop:
            views = np.concatenate([augment.ten_crop(b, size) for b in bases])
            patches = self._mean_patches(augment.ten_crop_positions(self.base, size) * len(idx))
            return augment.to_batch(views, pre, mean_patches=patches).reshape(len(idx), 10, 3, size, size), y
        mid = augment.center_offset(self.base, size)
        views = np.stack([augment.view(b, mid, mid, size, False) for b in bases])
        return augment.to_batch(views, pre, mean_patches=self._mean_patches([(mid, mid, False)] * len(idx))), y

    def _mean_patches(self, positions):
        """(N, 3, S, S) patches of the mean image under views at (top, left, flip), or None without one."""
        if self.mean_image is None:
            return None
        frame, size = (self.base, self.base), self.spec.input_size
        return np.stack([augment.mean_patch(self.mean_image, frame, int(t), int(l), size, bool(f))
                         for t, l, f in positions])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
