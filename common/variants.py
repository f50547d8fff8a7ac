"""The six well-known AlexNets as data: layers in order, the rule each follows, and where it comes from."""
from __future__ import annotations

from dataclasses import dataclass

from .layers import (AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, Init, Layer, LRN, MaxPool,
                     ReLU)


@dataclass(frozen=True)
class MeanImage:
    """A mean image the weights were trained minus (Caffe's ilsvrc_2012_mean.binaryproto: 3x256x256, BGR,
    0-255), named exactly: its shape (C, H, W) and the SHA-256 of its values as float32 little-endian, C order."""
    shape: tuple[int, int, int]
    sha256: str


@dataclass(frozen=True)
class Preprocessing:
    color_order: str  # RGB | BGR
    pixel_range: float  # 1.0: pixels in [0, 1]; 255.0: pixels in [0, 255]
    mean: tuple[float, float, float]  # in color_order, in pixel_range units
    std: tuple[float, float, float]
    resize: int  # short side before the crop
    crop: int
    source: str
    # set: subtract this image (in color_order and pixel_range units, cropped at the crop's offset) instead of
    # `mean`, which is then its per-channel mean, the approximation; None (every variant's): subtract `mean`
    mean_image: MeanImage | None = None


@dataclass(frozen=True)
class Case:
    """An override of a variant that the parity suite runs besides its defaults: a size where its rounding
    parts from the other variants' (or another shape of the net), and why it is worth a run."""
    why: str
    input_size: int | None = None
    num_classes: int | None = None
    include_top: bool | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in (("input_size", self.input_size), ("num_classes", self.num_classes),
                                  ("include_top", self.include_top)) if v is not None}


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    input_size: int
    num_classes: int
    layers: tuple[Layer, ...]
    preprocessing: Preprocessing
    source: str
    notes: tuple[str, ...] = ()
    why: tuple[tuple[str, str], ...] = ()  # (aspect, the reason this variant differs from the paper there)
    cases: tuple[Case, ...] = ()  # what the parity suite runs besides the defaults


N = Init("normal", 0.01)
ZERO, ONE, TENTH = Init("constant", 0.0), Init("constant", 1.0), Init("constant", 0.1)
TORCH_DEFAULT = Init("fan_in_uniform")


def _conv_block(i, out, kernel, stride, pad, groups, w, b, rounding="floor"):
    return (Conv(f"conv{i}", out_channels=out, kernel=kernel, stride=stride, pad=pad, groups=groups,
                 rounding=rounding, weight_init=w, bias_init=b), ReLU(f"relu{i}"))


def _fc(i, out, w, b, relu=True):
    return (Dense(f"fc{i}", out_features=out, weight_init=w, bias_init=b),) + ((ReLU(f"relu{i}"),) if relu else ())


def _classifier(num_classes, fc67_w, fc67_b, fc8_w, fc8_b, dropout_first):
    """fc6-fc8. Dropout on the *outputs* of fc6/fc7 (paper, Caffe) or on their *inputs* (torchvision)."""
    if dropout_first:
        return (Flatten("flatten"), Dropout("drop6"), *_fc(6, 4096, fc67_w, fc67_b), Dropout("drop7"),
                *_fc(7, 4096, fc67_w, fc67_b), *_fc(8, num_classes, fc8_w, fc8_b, relu=False))
    return (Flatten("flatten"), *_fc(6, 4096, fc67_w, fc67_b), Dropout("drop6"),
            *_fc(7, 4096, fc67_w, fc67_b), Dropout("drop7"), *_fc(8, num_classes, fc8_w, fc8_b, relu=False))


def _two_column(lrn: LRN, conv_bias: Init, conv1_rounding: str, pool_rounding: str, pool_then_norm: bool,
                groups: int = 2):
    """conv1-pool5 of the 96-256-384-384-256 net; groups=2 is the paper's two GPU columns."""
    def norm(i):
        return LRN(f"norm{i}", size=lrn.size, alpha=lrn.alpha, beta=lrn.beta, k=lrn.k, alpha_over_n=lrn.alpha_over_n)

    def pool(i):
        return MaxPool(f"pool{i}", kernel=3, stride=2, rounding=pool_rounding)

    def norm_pool(i):
        return (pool(i), norm(i)) if pool_then_norm else (norm(i), pool(i))

    return (*_conv_block(1, 96, 11, 4, 0, 1, N, ZERO, rounding=conv1_rounding), *norm_pool(1),
            *_conv_block(2, 256, 5, 1, 2, groups, N, conv_bias), *norm_pool(2),
            *_conv_block(3, 384, 3, 1, 1, 1, N, ZERO),
            *_conv_block(4, 384, 3, 1, 1, groups, N, conv_bias),
            *_conv_block(5, 256, 3, 1, 1, groups, N, conv_bias), pool(5))


IMAGENET_RGB_01 = dict(color_order="RGB", pixel_range=1.0, mean=(0.485, 0.456, 0.406),
                       std=(0.229, 0.224, 0.225))
CAFFE_BGR_255 = dict(color_order="BGR", pixel_range=255.0, mean=(104.00699, 116.66877, 122.67891),
                     std=(1.0, 1.0, 1.0))
VGG_RGB_255 = dict(color_order="RGB", pixel_range=255.0, mean=(123.68, 116.78, 103.94), std=(1.0, 1.0, 1.0))

PAPER_LRN = LRN("norm", size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_n=False)
CAFFE_LRN = LRN("norm", size=5, alpha=1e-4, beta=0.75, k=1.0, alpha_over_n=True)
TORCH_LRN = LRN("norm", size=5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_n=True)

PAPER_SRC = "Krizhevsky, Sutskever, Hinton, NIPS 2012, section 3 and cuda-convnet"
CAFFE_SRC = "BVLC caffe models/bvlc_alexnet/train_val.prototxt"
CAFFENET_SRC = "BVLC caffe models/bvlc_reference_caffenet/train_val.prototxt"
SINGLE_SRC = "one-GPU re-implementations of the paper (PyTorch LocalResponseNorm(5, 1e-4, 0.75, k=2))"
TORCHVISION_SRC = "torchvision/models/alexnet.py (Krizhevsky 2014, 'One weird trick')"
SLIM_SRC = "tensorflow/models research/slim/nets/alexnet.py alexnet_v2"

VARIANTS: dict[str, Variant] = {}


def _register(v: Variant) -> None:
    VARIANTS[v.name] = v


_register(Variant(
    name="paper", title="NIPS 2012 paper, two GPU columns", input_size=224, num_classes=1000,
    layers=(*_two_column(PAPER_LRN, ONE, conv1_rounding="ceil", pool_rounding="ceil", pool_then_norm=False),
            *_classifier(1000, N, ONE, N, ZERO, dropout_first=False)),
    preprocessing=Preprocessing(**VGG_RGB_255, resize=256, crop=224,
                                source="paper section 2: 256x256, minus the mean image (per-channel here)"),
    source=PAPER_SRC,
    notes=("224 input: cuda-convnet sizes outputs as 1+ceil((in-k)/s), i.e. conv1 padded 0 before, 3 after",
           "LRN alpha=1e-4 multiplies the plain sum (not divided by n), k=2"),
    cases=(Case("no conv1 padding", input_size=227),)))

_register(Variant(
    name="caffe", title="Caffe bvlc_alexnet", input_size=227, num_classes=1000,
    layers=(*_two_column(CAFFE_LRN, TENTH, conv1_rounding="floor", pool_rounding="ceil", pool_then_norm=False),
            *_classifier(1000, Init("normal", 0.005), TENTH, N, ZERO, dropout_first=False)),
    preprocessing=Preprocessing(**CAFFE_BGR_255, resize=256, crop=227, source="caffe ilsvrc_2012_mean, BGR"),
    source=CAFFE_SRC,
    why=(("lrn", "Caffe's LRN divides alpha by local_size and uses k=1 (its default), not the paper's k=2"),
         ("input", "227 makes (227-11)/4+1 = 55 exact, no padding; Caffe's pooling rounds up (ceil)"),
         ("init", "bvlc_alexnet's train_val.prototxt: std 0.005 for fc6/fc7 and bias 0.1, not the paper's 1")),
    cases=(Case("ceil pooling: 7x7 pool5, fc6 of 12,544", input_size=256),)))

_register(Variant(
    name="caffenet", title="Caffe bvlc_reference_caffenet", input_size=227, num_classes=1000,
    layers=(*_two_column(CAFFE_LRN, ONE, conv1_rounding="floor", pool_rounding="ceil", pool_then_norm=True),
            *_classifier(1000, Init("normal", 0.005), ONE, N, ZERO, dropout_first=False)),
    preprocessing=Preprocessing(**CAFFE_BGR_255, resize=256, crop=227, source="caffe ilsvrc_2012_mean, BGR"),
    source=CAFFENET_SRC,
    why=(("order", "CaffeNet pools before normalising (pool then norm), the paper normalises then pools"),
         ("lrn", "Caffe's LRN divides alpha by local_size and uses k=1 (its default), not the paper's k=2"),
         ("input", "227 makes (227-11)/4+1 = 55 exact, no padding; Caffe's pooling rounds up (ceil)"))))

_register(Variant(
    name="single-column", title="one-column re-implementation of the paper", input_size=227, num_classes=1000,
    layers=(*_two_column(TORCH_LRN, ONE, conv1_rounding="floor", pool_rounding="floor", pool_then_norm=False,
                         groups=1),
            *_classifier(1000, N, ONE, N, ZERO, dropout_first=False)),
    preprocessing=Preprocessing(**IMAGENET_RGB_01, resize=256, crop=227, source="torchvision ImageNet statistics"),
    source=SINGLE_SRC,
    why=(("lrn", "PyTorch's nn.LocalResponseNorm(5, 1e-4, 0.75, k=2) divides alpha by n: its sum is scaled by "
                 "2e-05, the paper's by 1e-4 (5x stronger); to get the paper's formula in PyTorch pass alpha=5e-4"),
         ("groups", "one GPU: conv2, conv4, conv5 see all channels of the layer below, not half, so they hold twice "
                    "the weights"),
         ("input", "227 makes (227-11)/4+1 = 55 exact with plain floor rounding")),
    cases=(Case("another classifier width", num_classes=10),)))

_register(Variant(
    name="torchvision", title="torchvision.models.alexnet", input_size=224, num_classes=1000,
    layers=(*_conv_block(1, 64, 11, 4, 2, 1, TORCH_DEFAULT, TORCH_DEFAULT), MaxPool("pool1"),
            *_conv_block(2, 192, 5, 1, 2, 1, TORCH_DEFAULT, TORCH_DEFAULT), MaxPool("pool2"),
            *_conv_block(3, 384, 3, 1, 1, 1, TORCH_DEFAULT, TORCH_DEFAULT),
            *_conv_block(4, 256, 3, 1, 1, 1, TORCH_DEFAULT, TORCH_DEFAULT),
            *_conv_block(5, 256, 3, 1, 1, 1, TORCH_DEFAULT, TORCH_DEFAULT), MaxPool("pool5"),
            AdaptiveAvgPool("avgpool", output_size=6),
            *_classifier(1000, TORCH_DEFAULT, TORCH_DEFAULT, TORCH_DEFAULT, TORCH_DEFAULT, dropout_first=True)),
    preprocessing=Preprocessing(**IMAGENET_RGB_01, resize=256, crop=224,
                                source="torchvision AlexNet_Weights.IMAGENET1K_V1 transforms"),
    source=TORCHVISION_SRC,
    why=(("channels", "torchvision follows Krizhevsky 2014, 'One weird trick for parallelizing convolutional neural "
                      "networks' (arXiv:1404.5997): one column of 64-192-384-256-256 kernels, not the paper's two "
                      "columns of 48-128-192-192-128 (96-256-384-384-256 in all)"),
         ("groups", "one GPU, one column: no grouped convolutions"),
         ("padding", "conv1 pad 2 turns 224 into 55 with PyTorch's floor rounding: (224+2*2-11)//4+1 = 55; the "
                     "paper's 224 gives 55 only by cuda-convnet's ceil rule"),
         ("lrn", "no LRN: 'One weird trick' drops it; later work found it adds little accuracy for its cost"),
         ("adaptive", "AdaptiveAvgPool2d((6, 6)) lets any input size >= 63 reach fc6's 9216 inputs"),
         ("dropout", "nn.Sequential(Dropout, Linear, ReLU, ...): dropout acts on fc6's and fc7's inputs"),
         ("init", "PyTorch's default layer init, not the paper's N(0, 0.01)")),
    cases=(Case("adaptive pool 7 -> 6, overlapping bins", input_size=256),
           Case("adaptive pool 9 -> 6", input_size=320),
           Case("headless: pool5/avgpool is the output", include_top=False))))

GLOROT, TRUNC = Init("glorot_uniform"), Init("truncated_normal", 0.005)
_register(Variant(
    name="slim-v2", title="TF-slim alexnet_v2", input_size=224, num_classes=1000,
    layers=(*_conv_block(1, 64, 11, 4, 0, 1, GLOROT, TENTH), MaxPool("pool1"),
            *_conv_block(2, 192, 5, 1, 0, 1, GLOROT, TENTH, rounding="same"), MaxPool("pool2"),
            *_conv_block(3, 384, 3, 1, 0, 1, GLOROT, TENTH, rounding="same"),
            *_conv_block(4, 384, 3, 1, 0, 1, GLOROT, TENTH, rounding="same"),
            *_conv_block(5, 256, 3, 1, 0, 1, GLOROT, TENTH, rounding="same"), MaxPool("pool5"),
            *_classifier(1000, TRUNC, TENTH, TRUNC, ZERO, dropout_first=False)),
    preprocessing=Preprocessing(**VGG_RGB_255, resize=256, crop=224, source="slim preprocessing_factory: vgg"),
    source=SLIM_SRC,
    why=(("channels", "alexnet_v2 follows 'One weird trick' (64-192-384-384-256)"),
         ("padding", "TF SAME for conv2-conv5, VALID for conv1 and the pools: 224 -> 54 -> 26 -> 12 -> 5"),
         ("lrn", "no LRN"), ("groups", "one column"),
         ("init", "slim's defaults: Glorot-uniform convs, biases 0.1, truncated normal 0.005 for fc6-fc8")),
    notes=("fc6 is a 5x5 VALID conv in slim, fc7/fc8 1x1 convs; on a 5x5 pool5 that is exactly flatten + dense, "
           "which is how the spec (and the canonical weights) hold it",
           "slim's dropout takes keep_prob=0.5; rate here is the drop probability, also 0.5"),
    cases=(Case("TF SAME/VALID at another size (fc6 as a dense over 6x6)", input_size=256),)))
