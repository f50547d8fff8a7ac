"""The paper's data path, framework-neutral (numpy + Pillow): sources of labelled images, the paper's
augmentation and test-time views, and seeded float32 NCHW batches every framework trains on identically.

    from alexnet_parity.common import get_spec
    from alexnet_parity.training import Batches, Synthetic, val_split
    spec = get_spec("caffe", num_classes=10)
    train, val = val_split(Synthetic(num_classes=10, count=2000), fraction=0.1)
    for x, y in Batches(train, spec, 32, train=True, seed=0, epoch=3): ...
"""
from .augment import (LIGHTING_STD, PCA_EIGVAL, PCA_EIGVEC, Draws, average_softmax, base_image, base_size,
                      lighting_offset, ten_crop_positions, to_batch, to_pixels)
from .loader import Batches
from .sources import (ArraySource, Cifar10, ImageFolder, Source, Subset, Synthetic, read_cifar10_batch,
                      val_split)

__all__ = ["Batches", "Source", "ArraySource", "ImageFolder", "Cifar10", "Synthetic", "Subset", "val_split",
           "read_cifar10_batch", "average_softmax", "lighting_offset", "ten_crop_positions", "base_size",
           "base_image", "to_batch", "to_pixels", "Draws", "PCA_EIGVAL", "PCA_EIGVEC", "LIGHTING_STD"]
