"""caffe: a .caffemodel (binary NetParameter), read and written with our own wire-format code.

Layout: the layers named conv1..conv5 (type Convolution) and fc6..fc8 (InnerProduct) hold blobs
[weight, bias]. Convolution weight (out, in/group, kh, kw) and InnerProduct weight (out, in) with fc6's
inputs in C,H,W order are the canonical layout as they are (InnerProduct `transpose: true` stores
(in, out) and is transposed back). Two containers:
  - `layer` (NetParameter field 100, LayerParameter: name=1, type=2 string, blobs=7), blobs with
    BlobShape shape=7 (dim=1);
  - the old V1 `layers` (field 2, V1LayerParameter: name=4, type=5 enum, blobs=6), blobs with
    num/channels/height/width=1..4 (weights (1, 1, out, in), biases (1, 1, 1, out)), as the released
    bvlc_alexnet.caffemodel; its even older nested V0 layers (field 1) are read too.
Blob values: data=5 (float, packed or not) or double_data=8. Any other layer with blobs is an error.

The variant: a caffemodel records every layer with its parameters, so the order of Convolution, LRN and
MAX Pooling layers and the LRN constants (local_size, alpha/local_size, beta, k) pick it: caffe is
norm-then-pool with k=1, caffenet pool-then-norm, paper k=2 with alpha not divided by n, single-column
k=2, torchvision and slim-v2 have no LRN (and differ in shapes). A weights-only file leaves that to the
shapes, and to an optional .prototxt (deploy or train_val) that gives the same layer list. The input size
comes from input_dim / input_shape / an Input layer / a data layer's crop_size when present.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from alexnet_parity.common import LRN, VARIANTS, AdaptiveAvgPool, Conv, Dense, Dropout, MaxPool, ReLU, Spec

from . import preprocessing as prep
from . import protowire as pw
from . import prototxt
from ._common import atomic_output, check_regular, check_replaceable, finish, resolve_spec, shape_str, warn
from .registry import Format

PARAM_LAYERS = {**{f"conv{i}": "Convolution" for i in range(1, 6)},
                **{f"fc{i}": "InnerProduct" for i in range(6, 9)}}

# V1LayerParameter.LayerType and V0's type strings -> the new type strings (only those we act on or print)
V1_TYPES = {4: "Convolution", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU", 6: "Dropout",
            5: "Data", 12: "ImageData", 24: "WindowData", 29: "MemoryData", 20: "Softmax",
            21: "SoftmaxWithLoss", 1: "Accuracy", 22: "Split", 3: "Concat", 8: "Flatten", 39: "Deconvolution"}
V1_CODES = {name: code for code, name in V1_TYPES.items()}
V1_ENUM_NAMES = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
                 "POOLING": "Pooling", "RELU": "ReLU", "DROPOUT": "Dropout", "DATA": "Data",
                 "IMAGE_DATA": "ImageData", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
                 "ACCURACY": "Accuracy", "SPLIT": "Split", "CONCAT": "Concat", "FLATTEN": "Flatten"}
V0_TYPES = {"conv": "Convolution", "innerproduct": "InnerProduct", "lrn": "LRN", "pool": "Pooling",
            "relu": "ReLU", "dropout": "Dropout", "data": "Data", "softmax": "Softmax"}
MAX_POOL = 0
LRN_RTOL = 1e-5  # the file stores alpha as float32


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list = field(default_factory=list)  # numpy arrays, in the blob's own shape
    params: dict = field(default_factory=dict)  # num_output, group, transpose, local_size, alpha, beta, k, ...


@dataclass
class CaffeNet:
    layers: list
    input_size: int | None = None


# --- reading the binary file -----------------------------------------------------------------------------

def _ints(fields, number, what, default=None):
    values = [v for n, w, raw in fields if n == number for v in pw.as_ints(w, raw, what)]
    return values if values else ([] if default is None else [default])


def _int(fields, number, what, default=None):
    values = _ints(fields, number, what)
    return pw.signed(values[-1]) if values else default


def _float(fields, number, what, default=None):
    values = [pw.as_float(w, raw, what) for n, w, raw in fields if n == number]
    return values[-1] if values else default


def _sub(fields, number, what):
    raws = [raw for n, w, raw in fields if n == number]
    if not raws:
        return []
    if any(w != pw.LEN for n, w, _ in fields if n == number):
        raise ValueError(f"{what}: field {number} is not a message")
    return pw.parse(raws[-1], what)


def _read_blob(raw, what: str) -> np.ndarray:
    f = pw.parse(raw, what, runs={5: "<f4", 8: "<f8"})
    shape_fields = _sub(f, 7, f"{what} shape")
    if shape_fields:
        shape = tuple(pw.signed(v) for v in _ints(shape_fields, 1, f"{what} shape"))
    elif any(n in (1, 2, 3, 4) for n, _, _ in f):
        shape = tuple(_int(f, n, what, 0) for n in (1, 2, 3, 4))
    else:
        shape = None
    parts = {5: [], 8: []}
    for n, w, raw in f:
        if n in parts:
            dtype = "<f4" if n == 5 else "<f8"
            if w == pw.ARRAY:
                parts[n].append(raw)
            elif w == pw.LEN:
                parts[n].append(pw.packed_array(raw, dtype, what))
            else:
                raise ValueError(f"{what}: blob data has wire type {w}")
    data = parts[5] or parts[8]
    if not data:
        raise ValueError(f"{what}: blob holds no data")
    values = data[0] if len(data) == 1 else np.concatenate(data)
    if shape is None:
        shape = (values.size,)
    if any(d < 0 for d in shape) or math.prod(shape) != values.size:
        raise ValueError(f"{what}: blob has {values.size} values, its shape {shape_str(shape)} needs "
                         f"{math.prod(shape) if all(d >= 0 for d in shape) else 'a non-negative size'}")
    return values.reshape(shape)


def _conv_params(p, what):
    return {"num_output": _int(p, 1, what), "group": _int(p, 5, what, 1), "bias_term": _int(p, 2, what, 1),
            "kernel_size": _int(p, 4, what), "stride": _int(p, 6, what, 1), "pad": _int(p, 3, what, 0)}


def _ip_params(p, what):
    return {"num_output": _int(p, 1, what), "bias_term": _int(p, 2, what, 1), "transpose": _int(p, 6, what, 0)}


def _lrn_params(p, what):
    return {"local_size": _int(p, 1, what, 5), "alpha": _float(p, 2, what, 1.0), "beta": _float(p, 3, what, 0.75),
            "norm_region": _int(p, 4, what, 0), "k": _float(p, 5, what, 1.0)}


def _pool_params(p, what):
    return {"pool": _int(p, 1, what, MAX_POOL), "kernel_size": _int(p, 2, what), "stride": _int(p, 3, what, 1)}


def _read_layer(raw, index: int, container: str, path: str) -> CaffeLayer:
    what = f"{path}: {container} #{index}"
    f = pw.parse(raw, what)
    if container == "layer":  # LayerParameter
        numbers = dict(name=1, type=2, blobs=7, conv=106, ip=117, lrn=118, pool=121, transform=100, data=107)
        name = pw.as_str(*next(((w, v) for n, w, v in f if n == 1), (pw.LEN, b"")), what)
        type_ = pw.as_str(*next(((w, v) for n, w, v in f if n == 2), (pw.LEN, b"")), what)
    else:  # V1LayerParameter, or the V0LayerParameter nested in its field 1
        v0 = _sub(f, 1, what)
        if v0:
            return _read_v0_layer(v0, what)
        numbers = dict(name=4, type=5, blobs=6, conv=10, ip=17, lrn=18, pool=19, transform=36, data=11)
        name = pw.as_str(*next(((w, v) for n, w, v in f if n == 4), (pw.LEN, b"")), what)
        code = _int(f, 5, what, 0)
        type_ = V1_TYPES.get(code, f"V1 type {code}")
    what = f"{path}: layer {name!r}"
    layer = CaffeLayer(name, type_)
    layer.blobs = [_read_blob(raw, f"{what} blob {i}")
                   for i, raw in enumerate(v for n, w, v in f if n == numbers["blobs"])]
    if type_ == "Convolution":
        layer.params = _conv_params(_sub(f, numbers["conv"], what), what)
    elif type_ == "InnerProduct":
        layer.params = _ip_params(_sub(f, numbers["ip"], what), what)
    elif type_ == "LRN":
        layer.params = _lrn_params(_sub(f, numbers["lrn"], what), what)
    elif type_ == "Pooling":
        layer.params = _pool_params(_sub(f, numbers["pool"], what), what)
    # the crop size a data layer feeds the net: transform_param's, or the older data_param's
    crop = _int(_sub(f, numbers["transform"], what), 3, what, 0) or _int(_sub(f, numbers["data"], what), 5, what, 0)
    if crop:
        layer.params["crop_size"] = crop
    return layer


def _read_v0_layer(f, what) -> CaffeLayer:
    name = pw.as_str(*next(((w, v) for n, w, v in f if n == 1), (pw.LEN, b"")), what)
    kind = pw.as_str(*next(((w, v) for n, w, v in f if n == 2), (pw.LEN, b"")), what)
    what = f"{what.split(':')[0]}: layer {name!r}"
    layer = CaffeLayer(name, V0_TYPES.get(kind, kind))
    layer.blobs = [_read_blob(raw, f"{what} blob {i}") for i, raw in enumerate(v for n, w, v in f if n == 50)]
    layer.params = {"num_output": _int(f, 3, what), "group": _int(f, 9, what, 1), "pool": _int(f, 11, what, 0),
                    "local_size": _int(f, 13, what, 5), "alpha": _float(f, 14, what, 1.0),
                    "beta": _float(f, 15, what, 0.75), "k": _float(f, 22, what, 1.0), "norm_region": 0,
                    "transpose": 0, "bias_term": _int(f, 4, what, 1)}
    if _int(f, 20, what, 0):
        layer.params["crop_size"] = _int(f, 20, what, 0)
    return layer


MAX_BINARYPROTO = 64 << 20  # ilsvrc_2012_mean.binaryproto is 786 KB (3x256x256 float32)


def read_binaryproto(path: str, what: str) -> np.ndarray:
    """The values of a file holding one BlobProto (Caffe's .binaryproto, as compute_image_mean writes the
    ImageNet mean), in its shape (num/channels/height/width or BlobShape); a one-line ValueError naming it."""
    size = check_regular(path, what)
    if size > MAX_BINARYPROTO:
        raise ValueError(f"{what}: {size} bytes, over the {MAX_BINARYPROTO >> 20} MiB a mean image's BlobProto needs")
    with open(path, "rb") as fh:
        data = fh.read()
    return _read_blob(data, what)


def read_caffemodel(path: str) -> CaffeNet:
    check_regular(path)
    with open(path, "rb") as fh:
        data = fh.read()
    f = pw.parse(data, path)
    new = [raw for n, w, raw in f if n == 100]
    old = [raw for n, w, raw in f if n == 2]
    if any(w != pw.LEN for n, w, _ in f if n in (100, 2)):
        raise ValueError(f"{path}: not a Caffe NetParameter (layer fields are not messages)")
    if new and old:
        raise ValueError(f"{path}: holds both `layer` and V1 `layers` fields; Caffe itself refuses such a net")
    if not new and not old:
        raise ValueError(f"{path}: no layers: not a .caffemodel (a NetParameter with `layer` or `layers`)")
    container = "layer" if new else "layers"
    layers = [_read_layer(raw, i, container, path) for i, raw in enumerate(new or old)]
    return CaffeNet(layers, _input_size_from_dims(_ints(f, 4, path), _sub(f, 8, path), layers, path))


def _input_size_from_dims(input_dim, input_shape_fields, layers, source) -> int | None:
    dims = [pw.signed(d) for d in input_dim]
    if not dims and input_shape_fields:
        dims = [pw.signed(d) for d in _ints(input_shape_fields, 1, source)]
    return _square(dims, source) or _crop_size(layers)


def _square(dims, source) -> int | None:
    if len(dims) >= 4:
        if dims[2] != dims[3] or dims[2] <= 0:
            raise ValueError(f"{source}: input is {dims[2]}x{dims[3]}; AlexNet takes a square input")
        return dims[2]
    return None


def _crop_size(layers) -> int | None:
    return next((layer.params["crop_size"] for layer in layers if "crop_size" in layer.params), None)


# --- reading a .prototxt --------------------------------------------------------------------------------

MAX_PROTOTXT = 16 << 20  # AlexNet's deploy.prototxt is 4 KB, a train_val one 6 KB


def read_prototxt(path: str) -> CaffeNet:
    if check_regular(path, what="prototxt") > MAX_PROTOTXT:
        raise ValueError(f"{path}: over {MAX_PROTOTXT >> 20} MiB: not a Caffe net definition")
    try:
        with open(path, encoding="utf-8") as fh:
            net = prototxt.parse(fh.read(), path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    try:
        layers, dims = _text_net(net, path)
    except (TypeError, ValueError, AttributeError) as err:
        if isinstance(err, ValueError) and str(err).startswith(path):
            raise
        raise ValueError(f"{path}: not a Caffe net definition ({err})") from None
    return CaffeNet(layers, _square(dims, path) or _crop_size(layers))


def _text_net(net: list, path: str) -> tuple[list, list]:
    layers = []
    for entry in prototxt.get_all(net, "layer") + prototxt.get_all(net, "layers"):
        if not isinstance(entry, list):
            raise ValueError(f"{path}: a layer entry is not a message")
        type_ = prototxt.get(entry, "type", "")
        type_ = V1_ENUM_NAMES.get(type_, type_) if isinstance(type_, str) else str(type_)
        layer = CaffeLayer(str(prototxt.get(entry, "name", "")), type_)
        try:
            layer.params = _text_params(entry, type_)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: layer {layer.name!r} has a malformed parameter") from None
        shape = prototxt.get(prototxt.get(entry, "input_param", []), "shape")
        if type_ == "Input" and shape:
            layer.params["input_dims"] = [int(d) for d in prototxt.get_all(shape, "dim")]
        layers.append(layer)
    dims = [int(d) for d in prototxt.get_all(net, "input_dim")]
    if not dims and prototxt.get(net, "input_shape"):
        dims = [int(d) for d in prototxt.get_all(prototxt.get(net, "input_shape"), "dim")]
    if not dims:
        dims = next((layer.params["input_dims"] for layer in layers if "input_dims" in layer.params), [])
    return layers, dims


def _text_params(entry, type_) -> dict:
    g = prototxt.get
    params = {}
    if type_ == "Convolution":
        p = g(entry, "convolution_param", [])
        params = {"num_output": g(p, "num_output"), "group": int(g(p, "group", 1))}
    elif type_ == "InnerProduct":
        p = g(entry, "inner_product_param", [])
        params = {"num_output": g(p, "num_output"), "transpose": str(g(p, "transpose", "false")) == "true"}
    elif type_ == "LRN":
        p = g(entry, "lrn_param", [])
        region = g(p, "norm_region", "ACROSS_CHANNELS")
        params = {"local_size": int(g(p, "local_size", 5)), "alpha": float(g(p, "alpha", 1.0)),
                  "beta": float(g(p, "beta", 0.75)), "k": float(g(p, "k", 1.0)),
                  "norm_region": 0 if region in ("ACROSS_CHANNELS", 0) else 1}
    elif type_ == "Pooling":
        pool = g(g(entry, "pooling_param", []), "pool", "MAX")
        params = {"pool": MAX_POOL if pool in ("MAX", 0) else 1}
    crop = g(g(entry, "transform_param", []), "crop_size")
    if crop:
        params["crop_size"] = int(crop)
    return params


# --- which variants does a layer list allow? --------------------------------------------------------------

def _signature_of_file(layers) -> list | None:
    """The order of conv, LRN and max-pool layers before the first InnerProduct, LRN with its constants;
    None when the file records no LRN or pooling layer (a weights-only file says nothing about order)."""
    sig = []
    for layer in layers:
        if layer.type == "InnerProduct":
            break
        if layer.type == "Convolution":
            sig.append(("conv",))
        elif layer.type == "LRN":
            p = layer.params
            size = int(p["local_size"])
            sig.append(("lrn", size, float(p["alpha"]) / size if size else math.nan, float(p["beta"]),
                        float(p["k"]), int(p["norm_region"])))
        elif layer.type == "Pooling" and layer.params.get("pool", MAX_POOL) == MAX_POOL:
            sig.append(("maxpool",))
    return sig if any(s[0] != "conv" for s in sig) else None


def _signature_of_variant(variant: str) -> list:
    sig = []
    for layer in VARIANTS[variant].layers:
        if isinstance(layer, Dense):
            break
        if isinstance(layer, Conv):
            sig.append(("conv",))
        elif isinstance(layer, LRN):
            sig.append(("lrn", layer.size, layer.scale, layer.beta, layer.k, 0))
        elif isinstance(layer, MaxPool):
            sig.append(("maxpool",))
    return sig


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[0] != y[0] or len(x) != len(y):
            return False
        if x[0] == "lrn" and not (x[1] == y[1] and x[5] == y[5] and all(
                math.isclose(p, q, rel_tol=LRN_RTOL) for p, q in zip(x[2:5], y[2:5]))):
            return False
    return True


def describe_signature(sig) -> str:
    return ", ".join("norm" if s[0] == "lrn" else s[0] for s in sig)


def structural_candidates(net: CaffeNet, source: str) -> list[str] | None:
    sig = _signature_of_file(net.layers)
    if sig is None:
        return None
    fits = [v for v in VARIANTS if _same(sig, _signature_of_variant(v))]
    if not fits:
        lrn = next((s for s in sig if s[0] == "lrn"), None)
        consts = (f"; LRN local_size={lrn[1]} alpha/n={lrn[2]:.3g} beta={lrn[3]:g} k={lrn[4]:g}"
                  if lrn else "")
        raise ValueError(f"{source}: its layers ({describe_signature(sig)}{consts}) match no AlexNet variant; "
                         f"pass --variant to load the weights anyway")
    return fits


# --- canonical weights --------------------------------------------------------------------------------------

def _squeeze_leading(array: np.ndarray, ndim: int) -> np.ndarray:
    shape = array.shape
    while len(shape) > ndim and shape[0] == 1:
        shape = shape[1:]
    return array.reshape(shape)


def to_canonical(net: CaffeNet, path: str) -> dict[str, np.ndarray]:
    weights = {}
    for layer in net.layers:
        if not layer.blobs:
            continue
        expected = PARAM_LAYERS.get(layer.name)
        if expected is None:
            raise ValueError(f"{path}: layer {layer.name!r} ({layer.type}) has blobs, but AlexNet's parameter "
                             f"layers are {', '.join(PARAM_LAYERS)}")
        if layer.type != expected:
            raise ValueError(f"{path}: layer {layer.name!r} is a {layer.type}, expected {expected}")
        if f"{layer.name}.weight" in weights:
            raise ValueError(f"{path}: layer {layer.name!r} appears twice")
        if len(layer.blobs) != 2:
            raise ValueError(f"{path}: layer {layer.name!r} has {len(layer.blobs)} blob(s), expected 2 "
                             f"(weight, bias)")
        w, b = layer.blobs
        if expected == "Convolution":
            if w.ndim != 4:
                raise ValueError(f"{path}: tensor '{layer.name}.weight' has shape {shape_str(w.shape)}, "
                                 f"expected (out, in/group, kh, kw)")
        else:
            w = _squeeze_leading(w, 2)
            if w.ndim != 2:
                raise ValueError(f"{path}: tensor '{layer.name}.weight' has shape {shape_str(w.shape)}, "
                                 f"expected (out, in)")
            if layer.params.get("transpose"):
                w = w.T
        b = _squeeze_leading(b, 1)
        if b.ndim != 1:
            raise ValueError(f"{path}: tensor '{layer.name}.bias' has shape {shape_str(b.shape)}, expected (out,)")
        weights[f"{layer.name}.weight"], weights[f"{layer.name}.bias"] = w, b
    if not weights:
        raise ValueError(f"{path}: no layer holds blobs: a net definition without weights?")
    return weights


def _check_text_params(spec: Spec, net: CaffeNet, source: str) -> None:
    """A prototxt's num_output and group must be the spec's (the blobs alone cannot show group)."""
    for layer in net.layers:
        if layer.name not in PARAM_LAYERS or layer.name not in {x.name for x in spec.param_layers}:
            continue
        ours = spec.layer(layer.name)
        out = layer.params.get("num_output")
        want = ours.out_channels if isinstance(ours, Conv) else ours.out_features
        if out is not None and int(out) != want:
            raise ValueError(f"{source}: layer {layer.name!r} has num_output {out}, the weights have {want}")
        if isinstance(ours, Conv) and int(layer.params.get("group", 1)) != ours.groups:
            raise ValueError(f"{source}: layer {layer.name!r} has group {layer.params.get('group')}, "
                             f"{spec.variant} has {ours.groups}")


def load(path: str, variant: str | None = None, input_size: int | None = None,
         prototxt: str | None = None) -> tuple[Spec, dict]:
    try:
        net = read_caffemodel(path)
    except (MemoryError, OverflowError) as err:
        raise ValueError(f"{path}: corrupt caffemodel ({type(err).__name__})") from None
    weights = to_canonical(net, path)
    text = read_prototxt(prototxt) if prototxt else None
    candidates = None
    if variant is not None:
        _warn_if_contradicted(variant, ((path, net), (prototxt, text)))
    else:
        for source, source_net in ((path, net), (prototxt, text)):
            if source_net is not None:
                allowed = structural_candidates(source_net, source)
                if allowed is not None:
                    candidates = allowed if candidates is None else [v for v in candidates if v in allowed]
                    if not candidates:
                        raise ValueError(f"{prototxt}: its layer order or LRN constants contradict {path}'s")
    if input_size is None:
        input_size = net.input_size or (text.input_size if text else None)
    spec = resolve_spec({k: v.shape for k, v in weights.items()}, path, variant=variant,
                        input_size=input_size, candidates=candidates)
    if text is not None:
        _check_text_params(spec, text, prototxt)
    return finish(spec, weights, path)


def _warn_if_contradicted(variant: str, sources) -> None:
    """--variant overrides what a file records; when the file records another variant's layer order or LRN
    constants, say so (the weights then run in a net they were not trained in)."""
    for source, source_net in sources:
        if source_net is None:
            continue
        try:
            allowed = structural_candidates(source_net, source)
        except ValueError:  # records a layer list no variant has; --variant was the way to load it anyway
            continue
        if allowed is not None and variant not in allowed:
            warn(f"{source}: its layers ({describe_signature(_signature_of_file(source_net.layers))}) are "
                 f"{' or '.join(allowed)}'s, not {variant}'s; loading as {variant}, as --variant says")


# --- writing ----------------------------------------------------------------------------------------------

def _layer_chunks(container: str, name: str, type_: str, bottom: str, top: str, blobs=(), params=()) -> list:
    new = container == "layer"
    chunks = pw.field_str(1 if new else 4, name)
    chunks += pw.field_str(2, type_) if new else pw.field_varint(5, V1_CODES[type_])
    chunks += pw.field_str(3 if new else 2, bottom) + pw.field_str(4 if new else 3, top)
    for blob in blobs:
        chunks += pw.field_message(7 if new else 6, blob)
    for number_new, number_v1, param in params:
        chunks += pw.field_message(number_new if new else number_v1, param)
    return pw.field_message(100 if new else 2, chunks)


def _blob(container: str, array: np.ndarray, kind: str) -> list:
    if container == "layer":
        return pw.field_message(7, pw.field_packed_varints(1, array.shape)) + pw.field_packed_array(5, array)
    legacy = {"conv": array.shape, "dense": (1, 1, *array.shape), "bias": (1, 1, 1, *array.shape)}[kind]
    chunks = []
    for number, dim in zip((1, 2, 3, 4), legacy):
        chunks += pw.field_varint(number, dim)
    return chunks + pw.field_packed_array(5, array)


def net_chunks(spec: Spec, weights: dict, container: str = "layer") -> list:
    """The NetParameter of a spec: every layer Caffe has (AdaptiveAvgPool and Flatten have no Caffe layer;
    InnerProduct flattens C,H,W by itself), with parameters, so the file records the variant."""
    if container not in ("layer", "layers"):
        raise ValueError(f"unknown caffe container {container!r}: 'layer' (current) or 'layers' (V1)")
    s = spec.input_size
    chunks = pw.field_str(1, f"AlexNet-{spec.variant}") + pw.field_str(3, "data")
    for dim in (1, spec.in_channels, s, s):
        chunks += pw.field_varint(4, dim)
    blob = "data"
    for layer in spec.layers:
        if isinstance(layer, Conv):
            (top, bottom_pad), (left, _) = layer.padding
            param = (pw.field_varint(1, layer.out_channels) + pw.field_varint(3, top)
                     + pw.field_varint(4, layer.kernel) + pw.field_varint(5, layer.groups)
                     + pw.field_varint(6, layer.stride))
            blobs = [_blob(container, weights[f"{layer.name}.weight"], "conv"),
                     _blob(container, weights[f"{layer.name}.bias"], "bias")]
            chunks += _layer_chunks(container, layer.name, "Convolution", blob, layer.name, blobs,
                                    [(106, 10, param)])
            blob = layer.name
        elif isinstance(layer, Dense):
            blobs = [_blob(container, weights[f"{layer.name}.weight"], "dense"),
                     _blob(container, weights[f"{layer.name}.bias"], "bias")]
            chunks += _layer_chunks(container, layer.name, "InnerProduct", blob, layer.name, blobs,
                                    [(117, 17, pw.field_varint(1, layer.out_features))])
            blob = layer.name
        elif isinstance(layer, ReLU):
            chunks += _layer_chunks(container, layer.name, "ReLU", blob, blob)
        elif isinstance(layer, Dropout):
            chunks += _layer_chunks(container, layer.name, "Dropout", blob, blob,
                                    params=[(108, 12, pw.field_float(1, layer.rate))])
        elif isinstance(layer, LRN):
            param = (pw.field_varint(1, layer.size) + pw.field_float(2, layer.scale * layer.size)
                     + pw.field_float(3, layer.beta) + pw.field_float(5, layer.k))
            chunks += _layer_chunks(container, layer.name, "LRN", blob, layer.name, params=[(118, 18, param)])
            blob = layer.name
        elif isinstance(layer, MaxPool):
            param = (pw.field_varint(1, MAX_POOL) + pw.field_varint(2, layer.kernel)
                     + pw.field_varint(3, layer.stride) + pw.field_varint(4, layer.padding[0][0]))
            chunks += _layer_chunks(container, layer.name, "Pooling", blob, layer.name, params=[(121, 19, param)])
            blob = layer.name
        elif not isinstance(layer, AdaptiveAvgPool) and layer.kind != "flatten":
            raise TypeError(f"no Caffe layer for {layer.kind}")
    return chunks


def save(path: str, spec: Spec, weights: dict, container: str = "layer", preprocessing=None,
         deploy: bool = False) -> None:
    """deploy=True also writes the net as text, deploy_path(path), with the preprocessing in its header (a
    caffemodel has no field for it); each file atomically, and an existing prototxt is only ever replaced by
    one (checked before anything is written)."""
    chunks = net_chunks(spec, weights, container)
    text = deploy_text(spec, preprocessing or spec.preprocessing) if deploy else None
    if deploy:
        check_replaceable(deploy_path(path), is_prototxt, "a Caffe prototxt")
    with atomic_output(path, replaces=sniff, what="a caffemodel") as tmp:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
    if deploy:
        with atomic_output(deploy_path(path), replaces=is_prototxt, what="a Caffe prototxt") as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)


# --- the deploy .prototxt and the preprocessing it carries ----------------------------------------------

PREPROCESSING_MARK = "# alexnet-parity preprocessing: "


def deploy_path(path: str) -> str:
    """NAME.prototxt beside NAME.caffemodel."""
    return (path[:-len(".caffemodel")] if path.endswith(".caffemodel") else path) + ".prototxt"


def _message(name: str, fields: dict) -> str:
    return f"{name} {{ " + " ".join(f"{k}: {v}" for k, v in fields.items()) + " }"


def deploy_text(spec: Spec, preprocessing) -> str:
    """The deploy net of a spec in Caffe's text format (an Input layer, the layers net_chunks writes, then
    Softmax), headed by comments that give the input its weights expect."""
    s = spec.input_size
    lines = [f"# {spec.describe()}, written by alexnet-parity; the input: {prep.describe(preprocessing)}",
             PREPROCESSING_MARK + prep.to_json(preprocessing),
             f'name: "AlexNet-{spec.variant}"',
             f'layer {{ name: "data" type: "Input" top: "data" '
             f'input_param {{ shape {{ dim: 1 dim: {spec.in_channels} dim: {s} dim: {s} }} }} }}']
    blob = "data"

    def layer(name, type_, top, param=""):
        lines.append(f'layer {{ name: "{name}" type: "{type_}" bottom: "{blob}" top: "{top}"'
                     + (f" {param}" if param else "") + " }")

    for item in spec.layers:
        if isinstance(item, Conv):
            layer(item.name, "Convolution", item.name, _message("convolution_param", {
                "num_output": item.out_channels, "kernel_size": item.kernel, "stride": item.stride,
                "pad": item.padding[0][0], "group": item.groups}))
            blob = item.name
        elif isinstance(item, Dense):
            layer(item.name, "InnerProduct", item.name, _message("inner_product_param",
                                                                 {"num_output": item.out_features}))
            blob = item.name
        elif isinstance(item, ReLU):
            layer(item.name, "ReLU", blob)
        elif isinstance(item, Dropout):
            layer(item.name, "Dropout", blob, _message("dropout_param", {"dropout_ratio": repr(item.rate)}))
        elif isinstance(item, LRN):
            layer(item.name, "LRN", item.name, _message("lrn_param", {
                "local_size": item.size, "alpha": f"{item.scale * item.size:.9g}",
                "beta": repr(item.beta), "k": repr(item.k)}))
            blob = item.name
        elif isinstance(item, MaxPool):
            layer(item.name, "Pooling", item.name, _message("pooling_param", {
                "pool": "MAX", "kernel_size": item.kernel, "stride": item.stride, "pad": item.padding[0][0]}))
            blob = item.name
        elif not isinstance(item, AdaptiveAvgPool) and item.kind != "flatten":
            raise TypeError(f"no Caffe layer for {item.kind}")
    if spec.include_top:
        layer("prob", "Softmax", "prob")
    return "\n".join(lines) + "\n"


def is_prototxt(path: str) -> bool:
    """A Caffe net definition: a small text file that parses and names layers or inputs."""
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > MAX_PROTOTXT:
            return False
        with open(path, encoding="utf-8") as fh:
            net = prototxt.parse(fh.read(), path)
    except (OSError, ValueError):
        return False
    return any(key in ("layer", "layers", "input", "input_dim", "input_shape") for key, _ in net)


def read_preprocessing(path: str, spec: Spec, prototxt: str | None = None, **_):
    """What the deploy prototxt given (or NAME.prototxt beside the file) records, else Caffe's convention."""
    text = prototxt or deploy_path(path)
    if prototxt is not None or os.path.isfile(text):
        if check_regular(text, what="prototxt") > MAX_PROTOTXT:
            raise ValueError(f"{text}: over {MAX_PROTOTXT >> 20} MiB: not a Caffe net definition")
        try:
            with open(text, encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(PREPROCESSING_MARK):
                        return prep.from_json(line[len(PREPROCESSING_MARK):], text), "file"
        except UnicodeDecodeError:
            raise ValueError(f"{text}: not a text file") from None
    return prep.convention("caffe", spec, prep.CAFFE_CONVENTION), "format"


def claims(path: str) -> bool:
    return path.endswith(".caffemodel")


def sniff(path: str) -> bool:
    """A binary NetParameter: its first field is one a caffemodel starts with (name=1, layers=2, input=3,
    input_dim=4, layer=100), checked by parsing the first key; protobuf has no magic number."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
        number, wire = pw.first_key(head)
    except (OSError, ValueError):
        return False
    return (number, wire) in {(1, pw.LEN), (2, pw.LEN), (3, pw.LEN), (4, pw.VARINT), (100, pw.LEN)}


FORMAT = Format("caffe", load, save, claims, sniff, frameworks=(), holds="all", files=".caffemodel (+ .prototxt)",
                preprocessing=read_preprocessing, keeps_preprocessing=True)
