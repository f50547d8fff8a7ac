"""The layers torch.nn lacks in the form the spec asks for: explicitly padded conv and max pool, and
local response normalisation with the spec's own `scale` (paper: alpha, Caffe/torch: alpha/n); with
eager inference paths for max pool and LRN that are several times faster than torch's own on CPU."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_parity.common import LRN, Conv, MaxPool

# the fast inference paths below are for eager mode; under torch.compile the plain ops fuse better
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch >= 2.3


def _is_symmetric(padding) -> bool:
    (top, bottom), (left, right) = padding
    return top == bottom and left == right


def _pad_arg(padding) -> tuple[int, int, int, int]:
    (top, bottom), (left, right) = padding
    return (left, right, top, bottom)  # F.pad takes the last axis first


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d after an explicit zero pad, for the asymmetric pads nn.Conv2d cannot express:
    the paper's conv1 at 224 (0 before, 3 after) and TF-slim's SAME at odd sizes."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.pad = pad  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad={self.pad}"


def max_pool2d(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """F.max_pool2d(x, kernel, stride), bit for bit: the row maxima of `kernel` strided views, then
    their column maxima. Max is exact in any order, and NCHW max_pool2d is slow on CPU: the paper's
    pool1 at batch 32 takes 55 ms on one core that way and 6 ms this way. Autograd (whose tie-breaking
    must stay max_pool2d's), torch.compile and GPUs (whose own kernel is fast) get F.max_pool2d."""
    if (kernel < 2 or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()) or _is_compiling()
            or torch.onnx.is_in_onnx_export()):  # the exporter has no symbolic for maximum(..., out=)
        return F.max_pool2d(x, kernel, stride)
    span_h = (x.shape[-2] - kernel) // stride * stride + 1  # rows from a window's first to the last's
    span_w = (x.shape[-1] - kernel) // stride * stride + 1
    rows = torch.maximum(x[..., 0:span_h:stride, :], x[..., 1:1 + span_h:stride, :])
    for i in range(2, kernel):
        torch.maximum(rows, x[..., i:i + span_h:stride, :], out=rows)
    out = torch.maximum(rows[..., 0:span_w:stride], rows[..., 1:1 + span_w:stride])
    for j in range(2, kernel):
        torch.maximum(out, rows[..., j:j + span_w:stride], out=out)
    return out


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d with the spec's explicit pads, filled with -inf so windows that run past the edge
    (Caffe's and cuda-convnet's round-up pooling) see only real pixels; the pads come from the spec
    rather than from ceil_mode, so the rounding rule lives in one place (common.geometry). Runs
    max_pool2d above."""

    def __init__(self, kernel: int, stride: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0)):
        super().__init__(kernel, stride)
        self.pad = pad  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, value=float("-inf"))
        return max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}" + (f", pad={self.pad}" if any(self.pad) else "")


def make_conv(layer: Conv, device=None) -> nn.Conv2d:
    args = (layer.in_channels, layer.out_channels, layer.kernel)
    kwargs = dict(stride=layer.stride, groups=layer.groups, device=device)
    if _is_symmetric(layer.padding):
        (top, _), (left, _) = layer.padding
        return nn.Conv2d(*args, padding=(top, left), **kwargs)
    return PaddedConv2d(*args, pad=_pad_arg(layer.padding), **kwargs)


def make_max_pool(layer: MaxPool) -> MaxPool2d:
    return MaxPool2d(layer.kernel, layer.stride, pad=_pad_arg(layer.padding))


# Chunks of one sample's map (norm1: 1.2 MB): on a Xeon with 2 MB L2 per core, LRN's share of paper fell from
# +14-16% with 4 MB chunks to +9-11%; on an AMD EPYC with 512 KB L2 and 32 MB L3 the two sizes measured the same.
CHUNK_ELEMENTS = 1 << 18


def _window_sum_(window: torch.Tensor, a: torch.Tensor, before: int, after: int, scale: float = 1.0,
                 square: bool = True) -> torch.Tensor:
    """window_c += scale * sum over channels j in [c-before, c+after], j != c, of a_j^2 (or of a_j when
    square is False), in place on channel-shifted views: no padding, no temporaries."""
    for d in range(1, before + 1):
        if square:
            window[:, d:].addcmul_(a[:, :-d], a[:, :-d], value=scale)
        else:
            window[:, d:].add_(a[:, :-d], alpha=scale)
    for d in range(1, after + 1):
        if square:
            window[:, :-d].addcmul_(a[:, d:], a[:, d:], value=scale)
        else:
            window[:, :-d].add_(a[:, d:], alpha=scale)
    return window


def _inverse_power_(d: torch.Tensor, beta: float) -> torch.Tensor:
    """d <- d ** -beta in place; beta = 3/4 (every AlexNet's) as rsqrt(d) * sqrt(rsqrt(d)), which is
    ~3x cheaper than a general pow."""
    if beta != 0.75:
        return d.pow_(-beta)
    d.rsqrt_()
    return d.mul_(d.sqrt())


def _scale_by_inverse_power(a: torch.Tensor, d: torch.Tensor, beta: float, out: torch.Tensor) -> None:
    """out <- a * d ** -beta, overwriting d and with no temporary: for beta = 3/4, a * r * sqrt(r) with
    r = rsqrt(d), as two in-place products, so a chunk's passes touch only a, d and out."""
    if beta != 0.75:
        torch.mul(a, d.pow_(-beta), out=out)
        return
    torch.mul(a, d.rsqrt_(), out=out)
    out.mul_(d.sqrt_())


def local_response_norm(x: torch.Tensor, size: int, scale: float, beta: float, k: float, *,
                        inplace: bool = False) -> torch.Tensor:
    """b_c = a_c / (k + scale * sum_{j=c-size//2}^{c+(size-1)//2} a_j^2) ** beta over dim 1, zeros outside.

    Why not F.local_response_norm: it pads, runs avg_pool3d and allocates a fresh tensor at each of its
    six steps, and on CPU those fresh pages cost as much as the arithmetic: it takes half the paper
    net's time. Here, a few samples at a time, one small buffer gets k + scale * a^2 and the
    neighbours' squares by in-place addcmul_ on channel-shifted views while it is still in cache,
    then becomes the output's factor. With inplace=True the result overwrites x, so the layer
    allocates nothing large. The paper's norm1 at batch 32 (32x96x55x55) on one core: 14 ms, against
    206 ms for F.local_response_norm and 42 ms for the same shifted sums on whole tensors. Training
    goes through an autograd Function with the same kernels and a hand-written backward (forward +
    backward 166 ms against 560 ms); torch.compile gets the plain out-of-place formula, which
    inductor fuses on its own. bfloat16 and float16 inputs are computed in float32 and rounded back.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        # the sum of squares in float32: 0-255 pixels square past float16's 65504 (and torch has had no
        # float16 CPU LRN); the result is rounded back once
        return local_response_norm(x.float(), size, scale, beta, k).to(x.dtype)
    if torch.onnx.is_in_onnx_export():
        return _OnnxLocalResponseNorm.apply(x, size, scale, beta, k)
    if _is_compiling():
        return _local_response_norm_formula(x, size, scale, beta, k)
    if x.requires_grad and torch.is_grad_enabled():
        return _LocalResponseNormFunction.apply(x, size, scale, beta, k)
    out = x if inplace else torch.empty_like(x)
    sample = math.prod(x.shape[1:])  # a CPU takes chunks that stay in its caches, a GPU the whole batch
    per = max(1, CHUNK_ELEMENTS // max(1, sample)) if x.device.type == "cpu" else max(1, len(x))
    scratch = x.new_empty((min(per, len(x)), *x.shape[1:]))  # one small buffer, reused by every chunk
    k_ = x.new_full((), k)
    for xc, oc in zip(x.split(per), out.split(per)):
        window = torch.addcmul(k_, xc, xc, value=scale, out=scratch[:len(xc)])
        _window_sum_(window, xc, size // 2, (size - 1) // 2, scale)
        _scale_by_inverse_power(xc, window, beta, out=oc)
    return out


class _LocalResponseNormFunction(torch.autograd.Function):
    """LRN for training. With d_c = k + scale * sum_{j in W(c)} a_j^2 and b_c = a_c d_c^-beta:
    dL/da_j = g_j d_j^-beta - 2 scale beta a_j sum_{c: j in W(c)} g_c a_c d_c^(-beta-1).
    j in W(c) = [c - size//2, c + (size-1)//2] means c in [j - (size-1)//2, j + size//2]: the window
    mirrored, which only differs for an even size."""

    @staticmethod
    def forward(ctx, x, size, scale, beta, k):
        d = _window_sum_(torch.addcmul(x.new_full((), k), x, x, value=scale), x, size // 2, (size - 1) // 2, scale)
        r = _inverse_power_(d.clone(), beta)
        ctx.save_for_backward(x, d, r)
        ctx.lrn = size, scale, beta
        return x * r

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, d, r = ctx.saved_tensors
        size, scale, beta = ctx.lrn
        t = (g * x).mul_(r).div_(d)  # g_c a_c d_c^(-beta-1)
        mirrored = _window_sum_(t.clone(), t, (size - 1) // 2, size // 2, square=False)
        return (g * r).addcmul_(x, mirrored, value=-2 * scale * beta), None, None, None, None


def _local_response_norm_formula(x, size, scale, beta, k):
    """The same formula without in-place updates, for torch.compile to trace and fuse."""
    squares = F.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    channels = x.shape[1]
    window = sum(squares[:, i:i + channels] for i in range(size))
    d = k + scale * window
    if beta != 0.75:
        return x * d ** -beta
    r = torch.rsqrt(d)  # inductor turns `d ** -0.75` into a general pow, ~3x slower than this
    return x * r * torch.sqrt(r)


class _OnnxLocalResponseNorm(torch.autograd.Function):
    """LRN as torch.onnx.export (TorchScript) writes it: one ONNX LRN node. Traced, the in-place kernel above
    loses its updates of channel-shifted views, and the exported graph silently computes another function.
    ONNX divides alpha by size, so it gets scale * size; its window [c - (size-1)//2, c + size//2] is ours
    for the odd sizes every AlexNet uses. The forward only gives the tracer the output (it is written without
    sum() and rsqrt, which the exporter's peephole pass cannot take inside a Function)."""

    @staticmethod
    def forward(ctx, x, size, scale, beta, k):
        squares = F.pad(x * x, (0, 0, 0, 0, size // 2, (size - 1) // 2))
        channels = x.shape[1]
        window = squares[:, 0:channels]
        for i in range(1, size):
            window = window + squares[:, i:i + channels]
        return x * (k + scale * window) ** -beta

    @staticmethod
    def symbolic(g, x, size, scale, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=scale * size, beta_f=beta, bias_f=k)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN with the scale applied as given (the spec resolves alpha vs alpha/n).
    inplace=True overwrites its input, as nn.ReLU(inplace=True) does; AlexNet uses it so."""

    def __init__(self, layer: LRN, inplace: bool = False):
        super().__init__()
        self.size, self.scale, self.beta, self.k = layer.size, layer.scale, layer.beta, layer.k
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.scale, self.beta, self.k, inplace=self.inplace)

    def extra_repr(self) -> str:
        return (f"size={self.size}, scale={self.scale:g}, beta={self.beta:g}, k={self.k:g}"
                + (", inplace=True" if self.inplace else ""))
