"""Where labelled images come from: an image-folder tree, CIFAR-10's binary batches, in-memory arrays and a
synthetic dataset that needs no download. Every source gives uint8 (H, W, 3) RGB images by index, int64
labels and sorted class names."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the R, G and B planes, rows of 32


class Source:
    """A labelled image collection: len(), image(i) -> uint8 (H, W, 3) RGB, labels (int64), classes."""
    classes: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _check_index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} out of range for a source of {len(self)}")
        return int(i) % len(self)


class ArraySource(Source):
    """Images already in memory: uint8 (N, H, W, 3) RGB and their labels."""

    def __init__(self, images: np.ndarray, labels, classes=None):
        images, labels = np.asarray(images), np.asarray(labels, np.int64)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"{len(images)} images but labels of shape {labels.shape}")
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        self.classes = tuple(classes) if classes is not None else tuple(str(c) for c in range(n_classes))
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got {labels.min()}..{labels.max()}")
        self.images, self.labels = images, labels

    def image(self, i: int) -> np.ndarray:
        return self.images[self._check_index(i)]


class ImageFolder(Source):
    """root/<class>/**/<image>: one folder per class; sorted folder names give labels 0, 1, ...; files
    sorted within a class; other files and hidden folders are skipped. Decoded with Pillow on demand."""

    def __init__(self, root, extensions=IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.classes = tuple(sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")))
        if not self.classes:
            raise ValueError(f"image folder {self.root} has no class folders (expected root/<class>/<image>)")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            found = sorted(Path(dirpath, f) for dirpath, _, files in os.walk(self.root / name, followlinks=True)
                           for f in files if f.lower().endswith(tuple(extensions)))
            if not found:
                raise ValueError(f"class folder {self.root / name} holds no images ({', '.join(extensions)})")
            paths += found
            labels += [label] * len(found)
        self.paths, self.labels = paths, np.asarray(labels, np.int64)

    def image(self, i: int) -> np.ndarray:
        path = self.paths[self._check_index(i)]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise FileNotFoundError(f"image {path} no longer exists") from None
        except (OSError, SyntaxError, ValueError) as err:  # Pillow's errors for truncated or foreign files
            raise ValueError(f"cannot decode image {path}: {err}") from None


def _find_cifar_dir(root: Path) -> Path:
    for candidate in (root, root / "cifar-10-batches-bin"):
        if (candidate / "test_batch.bin").exists() or (candidate / "data_batch_1.bin").exists():
            return candidate
    return root


def read_cifar10_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch -> (uint8 (N, 32, 32, 3) RGB, int64 labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch {path} not found (expected the binary version: "
                                f"cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin)")
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise ValueError(f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a positive multiple of "
                         f"the {CIFAR_RECORD}-byte record")
    records = raw.reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise ValueError(f"{path} is not a CIFAR-10 binary batch: record {bad} has label {labels[bad]} (0..9)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


class Cifar10(ArraySource):
    """CIFAR-10's binary version (no pickle): data_batch_1..5.bin for train, test_batch.bin for test. `root`
    is the folder holding them or its parent (with cifar-10-batches-bin/). Loaded into memory (150 MB)."""

    def __init__(self, root, train: bool = True):
        folder = _find_cifar_dir(Path(root))
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        parts = [read_cifar10_batch(folder / name) for name in names]
        super().__init__(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                         CIFAR10_CLASSES)


class Subset(Source):
    """Some images of another source, in the given order, with its classes."""

    def __init__(self, source: Source, indices):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.classes, self.labels = source.classes, source.labels[self.indices]

    def image(self, i: int) -> np.ndarray:
        return self.source.image(int(self.indices[self._check_index(i)]))


def val_split(source: Source, fraction: float = 0.1, seed: int = 0) -> tuple[Subset, Subset]:
    """(train, val) for a source without a validation set: `fraction` of each class, chosen at random from
    `seed`, held out; the same seed always holds out the same images."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng([seed, 2])
    train, val = [], []
    for c in range(source.num_classes):
        members = rng.permutation(np.flatnonzero(source.labels == c))
        n_val = int(round(fraction * len(members)))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return Subset(source, np.sort(np.concatenate(train))), Subset(source, np.sort(np.concatenate(val)))


class Synthetic(Source):
    """Procedural images that need no download: class c is a grating at angle +-(90 deg * c / (K-1)) with
    one of three class-dependent frequencies, random phase and colours, over a random blob distractor and
    Gaussian noise. The sign of the angle is random, so a left-right flip keeps an image in its class.
    Image i is a pure function of (seed, i); labels cycle 0, 1, ..., K-1."""

    def __init__(self, num_classes: int = 10, count: int = 1000, size=64, seed: int = 0):
        h, w = (size, size) if np.isscalar(size) else size
        if num_classes < 1 or count < 1 or h < 1 or w < 1:
            raise ValueError(f"Synthetic needs num_classes, count and size >= 1, got {num_classes}, {count}, {size}")
        self.shape, self.seed = (int(h), int(w)), int(seed)
        self.classes = tuple(f"class{c}" for c in range(num_classes))
        self.labels = np.arange(count, dtype=np.int64) % num_classes
        unit = np.float32(1.0 / max(h, w))  # the longer side, so stripes keep their angle on any shape
        self._y = (np.arange(h, dtype=np.float32) * unit)[:, None]
        self._x = (np.arange(w, dtype=np.float32) * unit)[None, :]

    def image(self, i: int) -> np.ndarray:
        i = self._check_index(i)
        c, k = int(self.labels[i]), self.num_classes
        rng = np.random.default_rng([self.seed, 3, i])
        theta = np.pi / 2 * c / max(k - 1, 1) * rng.choice([-1.0, 1.0]) + rng.normal(0, 0.02)
        cycles = 3.0 + 1.5 * (c % 3) + rng.uniform(-0.3, 0.3)
        fy, fx = (np.float32(2 * np.pi * cycles * f(theta)) for f in (np.sin, np.cos))
        stripes = np.sin(self._x * fx + self._y * fy + np.float32(rng.uniform(0, 2 * np.pi)))
        dark, light = rng.uniform(0.0, 0.4, 3), rng.uniform(0.6, 1.0, 3)
        cy, cx, radius = (np.float32(v) for v in (rng.uniform(0, self._y.max()), rng.uniform(0, self._x.max()),
                                                  rng.uniform(0.08, 0.2)))
        blob = np.exp(((self._y - cy) ** 2 + (self._x - cx) ** 2) * (-0.5 / radius ** 2)) * np.float32(0.6)
        # one noise value per pixel (luminance): a third of the cost of per-channel noise, as good for learning
        noise = rng.standard_normal(self.shape, dtype=np.float32) * np.float32(0.05 * 255)
        # channel-first while computing, so per-channel constants broadcast over whole rows, not over triples
        mid, amp, blob_rgb = ((v * 255).astype(np.float32)[:, None, None]
                              for v in ((light + dark) / 2, (light - dark) / 2, rng.uniform(0, 1, 3)))
        img = mid + amp * stripes
        img += (blob_rgb - img) * blob
        img += noise + np.float32(0.5)
        return np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0))
