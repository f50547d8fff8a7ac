"""Where labelled images come from: an image-folder tree, CIFAR-10's binary batches, in-memory arrays and a
synthetic dataset that needs no download. Every source gives uint8 (H, W, 3) RGB images by index, int64
labels and sorted class names."""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# decode_image refuses every image over Pillow's bound with its own error; the warning Pillow prints first for
# those between one and two times the bound would only repeat it
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

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


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _class_images(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """The images under one class folder, sorted. A link to a folder that leads out of the class folder is
    refused: it would label another class's (or another split's) images as this class, and one up the tree is
    a loop that never ends. One to a folder inside it that is read already (a loop within the class) is
    skipped: each folder is read once. Anything named as an image must be a regular file: reading a FIFO
    blocks forever, a device never ends."""
    top = os.path.realpath(folder)
    seen = {_identity(top)}
    found, stack = [], [folder]
    while stack:
        path = here = stack.pop()
        try:
            with os.scandir(here) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    path = Path(entry.path)
                    _classify(entry, path, folder, top, seen, stack, found, extensions)
        except OSError as err:  # a link loop of files (ELOOP), a folder we may not read
            raise ValueError(f"image folder: cannot read {path} ({err.strerror})") from None
    return sorted(found)


def _classify(entry, path: Path, folder: Path, top: str, seen: set, stack: list, found: list, extensions) -> None:
    """One entry of a class folder: a folder to read (onto `stack`), an image (onto `found`), or refused."""
    if entry.is_dir():  # follows a link, to a folder
        real = os.path.realpath(path)
        target = f" (a link to {os.readlink(path)})" if entry.is_symlink() else ""
        if not _inside(real, top):
            raise ValueError(f"image folder: {path}{target} leads out of the class folder {folder}; "
                             f"its images would be labelled {folder.name!r}; remove the link")
        inode = _identity(real)
        if inode in seen:  # a loop within the class, or a second way to the same folder: read once
            return
        seen.add(inode)
        stack.append(path)
    elif entry.name.lower().endswith(extensions):
        try:
            mode = os.stat(path).st_mode
        except OSError as err:
            what = f"a link to {os.readlink(path)}" if entry.is_symlink() else "unreadable"
            raise ValueError(f"image {path}: {what} that cannot be read ({err.strerror})") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"image {path} is not a regular file ({_kind(mode)}); remove it")
        found.append(path)


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


class _Refused(ValueError):
    pass


def max_pixels() -> int:
    """The most pixels an image may declare: Pillow's own bound (MAX_IMAGE_PIXELS, 89 million, about 268 MB of
    RGB), which a user may raise; without one, 2**31."""
    return int(Image.MAX_IMAGE_PIXELS or 2 ** 31)


def _to_rgb(im: Image.Image) -> np.ndarray:
    # Pillow's convert("RGB") clips a 16-bit greyscale image's 0..65535 to 255 (nearly all white); scale it
    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im, dtype=np.int64)
        gray = ((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def decode_image(path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file, or ValueError naming it: refuses what is not a regular file (a FIFO
    would block the read forever) and images that declare more than max_pixels() before decoding them (a few
    bytes of PNG can declare 100000 x 100000); 16-bit greyscale is scaled to 8 bits, not clipped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # opening a FIFO must not block
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path}: no such file") from None
    except OSError as err:
        raise ValueError(f"image {path}: cannot open ({err.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError(f"image {path}: not a regular file ({_kind(mode)})")
    with os.fdopen(fd, "rb") as fh:
        try:
            with Image.open(fh) as im:
                w, h = im.size
                if w * h > max_pixels():
                    raise _Refused(f"image {path}: declares {w}x{h} pixels, over the {max_pixels():,} an image "
                                   f"may have (a decompression bomb?)")
                if w < 1 or h < 1:
                    raise _Refused(f"image {path}: declares {w}x{h} pixels")
                return _to_rgb(im)
        except _Refused:
            raise
        except Image.DecompressionBombError as err:
            raise _Refused(f"image {path}: {err}") from None
        except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError) as err:
            # Pillow's errors for truncated or foreign files
            raise ValueError(f"cannot decode image {path}: {err}") from None


class ImageFolder(Source):
    """root/<class>/**/<image>: one folder per class; sorted folder names give labels 0, 1, ...; files
    sorted within a class; other files and hidden folders are skipped. Decoded with Pillow on demand.
    A class folder may be a link; links inside one must stay in it (see _class_images)."""

    def __init__(self, root, extensions=IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.classes = tuple(sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")))
        if not self.classes:
            raise ValueError(f"image folder {self.root} has no class folders (expected root/<class>/<image>)")
        # a class folder that is a link may not hold the image folder or another class, nor lie inside another
        real = {name: os.path.realpath(self.root / name) for name in self.classes}
        top = os.path.realpath(self.root)
        for name, where in real.items():
            if _inside(top, where):
                clash = "holds the image folder itself"
            else:
                clash = next((f"overlaps class {other!r}" for other in self.classes if other != name
                              and (_inside(real[other], where) or _inside(where, real[other]))), None)
            if clash:
                raise ValueError(f"image folder: class folder {self.root / name} (at {where}) {clash}; "
                                 f"each class needs a folder of its own")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            found = _class_images(self.root / name, tuple(extensions))
            if not found:
                raise ValueError(f"class folder {self.root / name} holds no images ({', '.join(extensions)})")
            paths += found
            labels += [label] * len(found)
        self.paths, self.labels = paths, np.asarray(labels, np.int64)

    def image(self, i: int) -> np.ndarray:
        path = self.paths[self._check_index(i)]
        try:
            return decode_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image {path} no longer exists") from None


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
