"""What `--data` names, for train and eval: `synthetic` / `synthetic:N`, a CIFAR-10 binary folder, an image
folder with train/ and val/ inside, or one image folder (root/<class>/<image>)."""
from __future__ import annotations

import os
from pathlib import Path

SYNTHETIC_COUNT = 1000
HELP = ("synthetic[:N] (N procedural images, default 1000, no download), a CIFAR-10 binary folder "
        "(cifar-10-batches-bin), a folder with train/ and val/ image folders, or one image folder root/<class>/<image>")


def synthetic_count(data: str) -> int | None:
    """N for 'synthetic' or 'synthetic:N', None for a path."""
    name, _, count = data.partition(":")
    if name != "synthetic":
        return None
    if not count:
        return SYNTHETIC_COUNT
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"--data {data}: the image count after 'synthetic:' must be a positive integer")
    return int(count)


def normalized(data: str) -> str:
    """The --data value as a checkpoint records it: synthetic:N, or an absolute path."""
    n = synthetic_count(data)
    return f"synthetic:{n}" if n is not None else str(Path(data).resolve())


def _root(data: str) -> Path:
    root = Path(data)
    try:
        os.stat(root)
    except FileNotFoundError:
        raise FileNotFoundError(f"--data {data}: no such directory (or use --data synthetic)") from None
    except OSError as err:  # a name too long, a link loop, a folder we may not enter
        raise ValueError(f"--data {data}: {err.strerror}") from None
    if not root.is_dir():
        raise ValueError(f"--data {data}: not a directory; expected {HELP}")
    return root


def _is_cifar(root: Path) -> bool:
    return any((folder / name).is_file() for folder in (root, root / "cifar-10-batches-bin")
               for name in ("data_batch_1.bin", "test_batch.bin"))


def _has_split(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def training_sources(data: str, num_classes: int | None, val_fraction: float):
    """(train, val) sources: the data's own split where it has one (train/ and val/), else val_fraction of
    each class held out (the same images whatever the run's seed)."""
    from alexnet_parity.training import Cifar10, ImageFolder, Synthetic, val_split

    n = synthetic_count(data)
    if n is not None:
        return val_split(Synthetic(num_classes=num_classes or 10, count=n, seed=0), val_fraction)
    root = _root(data)
    if _has_split(root):
        train, val = ImageFolder(root / "train"), ImageFolder(root / "val")
        if train.classes != val.classes:
            raise ValueError(f"--data {data}: train/ and val/ hold different class folders")
        return train, val
    return val_split(Cifar10(root, train=True) if _is_cifar(root) else ImageFolder(root), val_fraction)


def eval_source(data: str, num_classes: int):
    """The images to evaluate on: synthetic draws training never saw (another seed), CIFAR-10's
    test_batch.bin, val/ of a train/val folder, or the whole image folder."""
    from alexnet_parity.training import Cifar10, ImageFolder, Synthetic

    n = synthetic_count(data)
    if n is not None:
        return Synthetic(num_classes=num_classes, count=n, seed=1)
    root = _root(data)
    if _has_split(root):
        return ImageFolder(root / "val")
    return Cifar10(root, train=False) if _is_cifar(root) else ImageFolder(root)
