"""onnx: an ONNX model (.onnx) of an AlexNet; written from the spec by onnx_impl, read by its graph's structure.

Layout: canonical weights are the initializers of the chain's Conv nodes (W (out, in/group, kh, kw), B) and
Gemm nodes (transB=1: W (out, in); transB=0 and MatMul+Add store (in, out) and are transposed back), taken by
their order in the chain (conv1..conv5, fc6..fc8), never by name: our own exports, torch.onnx.export's and
the ONNX model zoo's Caffe2-named bvlc_alexnet (`conv1_w_0`, input `data_0`, max pools padded on the far side
for Caffe's round-up at 224, Reshape to (-1, 9216), Softmax) all read the same way. fc6's inputs are in
C,H,W order, as an NCHW Flatten gives.

The variant follows from the structure: the order of LRN and max pool and the LRN constants (ONNX's alpha is
divided by size) pick the candidates, the tensor shapes and groups the one; then every node is checked
against that spec (kernels, strides, the windows its pads make, groups, the adaptive pool's bins). Our own
files also record the spec in metadata_props, checked against this version's. The input size is the graph
input's when static. Weights are inline, or on request (external_data=True) in FILE.data beside the model.
External data is read only from regular files inside the model's folder; every declared tensor size is
checked against the spec's shapes and the bytes present before anything is read.
"""
from __future__ import annotations

import os


from alexnet_parity.common import VARIANTS, Spec

from . import preprocessing as prep
from ._common import atomic_output, check_replaceable, finish, resolve_spec, spec_of_file, temp_name
from .registry import Format

MAX_BYTES = 2 << 30  # protobuf's limit on one message; larger models need external data
MODEL_FIRST_BYTES = {0x08, 0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a, 0x42, 0x4a, 0x72, 0xa2}  # ModelProto field keys


def read_model(path: str):
    """The ModelProto at `path`, tensors' external data left where it is; ValueError naming the file."""
    import onnx
    from google.protobuf.message import DecodeError

    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise ValueError(f"{path}: {size:,} bytes is over protobuf's 2 GB limit for one ONNX model")
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, RuntimeError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as err:
        raise ValueError(f"{path}: not a readable ONNX model (truncated or corrupt?): "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ValueError(f"{path}: holds no ONNX graph (not an ONNX model, or truncated)")
    return model


def _candidates(graph, source: str) -> list[str] | None:
    from alexnet_parity.onnx_impl import signature

    from .caffe import _same, _signature_of_variant, describe_signature

    sig = signature(graph)
    if sig is None:
        return None
    fits = [v for v in VARIANTS if _same(sig, _signature_of_variant(v))]
    if not fits:
        lrn = next((s for s in sig if s[0] == "lrn"), None)
        consts = f"; LRN size={lrn[1]} alpha/size={lrn[2]:.3g} beta={lrn[3]:g} bias={lrn[4]:g}" if lrn else ""
        raise ValueError(f"{source}: its layers ({describe_signature(sig)}{consts}) match no AlexNet variant")
    return fits


def load(path: str, variant: str | None = None, input_size: int | None = None) -> tuple[Spec, dict]:
    from alexnet_parity.onnx_impl import FORMAT_TAG, check_against, read_graph

    graph = read_graph(read_model(path), path, base_dir=os.path.dirname(os.path.abspath(path)))
    shapes = graph.shapes()
    h, w = (graph.input_shape[2:] + (None, None))[:2] if len(graph.input_shape) == 4 else (None, None)
    size_in_file = h if h and h == w else None
    if input_size is None:
        input_size = size_in_file
    meta = graph.metadata
    if meta.get("format") == FORMAT_TAG and meta.get("variant"):
        spec = spec_of_file(meta, shapes, path, variant, None if input_size == int(meta.get("input_size", 0) or 0)
                            else input_size)
    else:
        candidates = None if variant else _candidates(graph, path)
        spec = resolve_spec(shapes, path, variant=variant, input_size=input_size, candidates=candidates)
    check_against(graph, spec)  # before any tensor's bytes are read
    return finish(spec, graph.materialize(), path)


def _to_external(model, data_name: str, data_path: str) -> None:
    """Move every initializer's bytes into the file `data_path` (page-aligned offsets), the model keeping
    only `location = data_name` (relative: the two files travel together)."""
    from onnx import TensorProto

    offset = 0
    with open(data_path, "wb") as fh:
        for t in model.graph.initializer:
            raw = t.raw_data
            pad = -offset % 4096
            fh.write(b"\0" * pad)
            offset += pad
            fh.write(raw)
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)


def read_preprocessing(path: str, spec: Spec, **_):
    """metadata_props["preprocessing"] of a model this project wrote; None for any other ONNX file."""
    from alexnet_parity.onnx_impl import FORMAT_TAG

    meta = {p.key: p.value for p in read_model(path).metadata_props}
    if meta.get("format") != FORMAT_TAG or "preprocessing" not in meta:
        return None
    return prep.from_json(meta["preprocessing"], path), "file"


def save(path: str, spec: Spec, weights: dict, external_data: bool = False, preprocessing=None) -> None:
    from alexnet_parity.onnx_impl import build_model

    model = build_model(spec, weights)
    if preprocessing is not None:  # export records the spec's; the weights' own replaces it
        entry = next(p for p in model.metadata_props if p.key == "preprocessing")
        entry.value = prep.to_json(preprocessing)
    if not external_data and model.ByteSize() >= MAX_BYTES:
        raise ValueError(f"{path}: {spec.describe()} is over protobuf's 2 GB limit inline; write it with "
                         f"external data (--external-data)")
    data_path = path + ".data"
    if external_data:
        check_replaceable(data_path, lambda p: sniff(path), "the external data of the ONNX model it replaces")
    with atomic_output(path, replaces=sniff, what="an ONNX model") as tmp:
        if external_data:
            tmp_data = temp_name(data_path)
            try:
                _to_external(model, os.path.basename(data_path), tmp_data)
                with open(tmp, "wb") as fh:
                    fh.write(model.SerializeToString())
                os.replace(tmp_data, data_path)
            except BaseException:
                if os.path.exists(tmp_data):
                    os.remove(tmp_data)
                raise
        else:
            with open(tmp, "wb") as fh:
                fh.write(model.SerializeToString())


def claims(path: str) -> bool:
    return path.endswith(".onnx")


def sniff(path: str) -> bool:
    """An ONNX model: it starts with a ModelProto field key and parses with a graph (protobuf has no magic)."""
    if not os.path.isfile(path) or os.path.getsize(path) > MAX_BYTES:
        return False
    try:
        with open(path, "rb") as fh:
            if (fh.read(1) or b"\0")[0] not in MODEL_FIRST_BYTES:
                return False
        read_model(path)
    except (OSError, ValueError):
        return False
    return True


FORMAT = Format("onnx", load, save, claims, sniff, frameworks=("onnx",), holds="all", files=".onnx (+ .onnx.data)",
                preprocessing=read_preprocessing, keeps_preprocessing=True)

__all__ = ["load", "save", "claims", "sniff", "read_model", "FORMAT"]
