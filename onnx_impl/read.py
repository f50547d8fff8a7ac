"""An ONNX AlexNet's graph read by its structure: the chain of Conv/Relu/LRN/MaxPool/.../Gemm nodes from the
one real input to the output, with each node's attributes, and lazy references to its weight tensors.

Nothing here trusts names: the five convolutions and three dense layers are conv1..conv5 and fc6..fc8 by
their order in the chain. Tensor bytes are read only by `materialize`, after the caller has checked the
declared shapes against a spec, and external data only from regular files inside the model's folder.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

MIN_OPSET = 1
MAX_OPSET = onnx.defs.onnx_opset_version()
DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}
INT_DTYPES = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32}
SMALL = 4096  # elements: the most a shape/pads/axes constant may declare


@dataclass
class TensorRef:
    """A weight tensor not yet read: its proto, and whether canonical layout is its transpose."""
    proto: TensorProto
    transpose: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        dims = tuple(int(d) for d in self.proto.dims)
        return dims[::-1] if self.transpose else dims


@dataclass
class Op:
    kind: str  # conv relu lrn maxpool pad avgpool poolmat flatten dense identity softmax
    node: onnx.NodeProto
    attrs: dict = field(default_factory=dict)
    weight: TensorRef | None = None
    bias: TensorRef | None = None

    @property
    def label(self) -> str:
        return f"node {self.node.name or self.node.output[0]!r} ({self.node.op_type})"


@dataclass
class Graph:
    source: str
    input_name: str
    input_shape: tuple  # ints or None for symbolic dims
    ops: list
    opset: int
    metadata: dict
    base_dir: str | None = None

    def params(self) -> dict[str, TensorRef]:
        """Canonical names by order: conv1..conv5, then fc6.. (weights and biases)."""
        refs, convs, denses = {}, 0, 0
        for op in self.ops:
            if op.kind == "conv":
                convs += 1
                name = f"conv{convs}"
            elif op.kind == "dense":
                denses += 1
                name = f"fc{5 + denses}"
            else:
                continue
            refs[f"{name}.weight"] = op.weight
            refs[f"{name}.bias"] = op.bias
        return refs

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: ref.shape for name, ref in self.params().items()}

    def param_ops(self) -> dict[str, Op]:
        return {name.split(".")[0]: op for name, op in zip(
            [n for n in self.params() if n.endswith(".weight")], [o for o in self.ops if o.kind in ("conv", "dense")])}

    def materialize(self) -> dict[str, np.ndarray]:
        return {name: tensor_array(ref, self.source, name, self.base_dir) for name, ref in self.params().items()}


def error(source: str, message: str) -> ValueError:
    return ValueError(f"{source}: {message}")


# --- tensors ----------------------------------------------------------------------------------------------------

def external_path(base_dir: str | None, location: str, source: str, name: str) -> str:
    """The file an external-data `location` names, which must be a regular file inside the model's folder:
    no absolute path, no '..', and no symlink that leads out (the path-traversal class of ONNX advisories)."""
    if base_dir is None:
        raise error(source, f"tensor {name!r} keeps its data in an external file ({location!r}), but the model "
                            f"was not read from a file")
    parts = location.replace("\\", "/").split("/")
    if (not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in parts[0]
            or ".." in parts or "\x00" in location):
        raise error(source, f"tensor {name!r}: external data location {location!r} points outside the model's "
                            f"folder; refused")
    base = os.path.realpath(base_dir)
    real = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([base, real]) != base:
        raise error(source, f"tensor {name!r}: external data location {location!r} leads outside the model's "
                            f"folder (through a symlink); refused")
    if not os.path.isfile(real):
        raise error(source, f"tensor {name!r}: external data file {location!r} does not exist beside the model")
    return real


def tensor_array(ref: TensorRef, source: str, name: str, base_dir: str | None) -> np.ndarray:
    """The tensor's values as a numpy array in canonical layout, after checking that the bytes the file
    holds are exactly the declared shape's (nothing is allocated from a declared size alone)."""
    t = ref.proto
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise error(source, f"tensor {name!r} declares a negative dimension {dims}")
    dtype = DTYPES.get(t.data_type)
    if dtype is None and t.data_type != TensorProto.BFLOAT16:
        kind = TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type
        raise error(source, f"tensor {name!r} has ONNX data type {kind}; weights must be float16, bfloat16, float32 "
                            f"or float64")
    itemsize = 2 if dtype is None else np.dtype(dtype).itemsize
    count = math.prod(dims)
    nbytes = count * itemsize
    if t.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", nbytes))
        except ValueError:
            raise error(source, f"tensor {name!r}: malformed external data offset or length") from None
        path = external_path(base_dir, info.get("location", ""), source, name)
        size = os.path.getsize(path)
        if length != nbytes or offset < 0 or offset + nbytes > size:
            raise error(source, f"tensor {name!r} declares {dims} ({nbytes:,} bytes), but its external file holds "
                                f"{max(0, min(length, size - offset)):,} bytes at offset {offset}")
        with open(path, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise error(source, f"tensor {name!r}: external file ended early")
    elif t.HasField("raw_data"):
        raw = t.raw_data
        if len(raw) != nbytes:
            raise error(source, f"tensor {name!r} declares {dims} ({nbytes:,} bytes), but holds {len(raw):,}")
    else:
        values = {TensorProto.FLOAT: t.float_data, TensorProto.DOUBLE: t.double_data}.get(t.data_type, t.int32_data)
        if len(values) != count:
            raise error(source, f"tensor {name!r} declares {dims} ({count:,} values), but holds {len(values):,}")
        if t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16):  # 16-bit patterns in int32 fields
            raw = np.asarray(values, dtype=np.uint16).tobytes()
        else:
            raw = np.asarray(values, dtype=dtype).tobytes()
    if dtype is None:  # bfloat16: the upper half of a float32
        array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    array = array.reshape(dims)
    return np.ascontiguousarray(array.T if ref.transpose else array)


def small_ints(proto: TensorProto, source: str, what: str) -> list[int]:
    """A shape/pads/axes constant: a short int tensor."""
    dims = tuple(int(d) for d in proto.dims)
    if proto.data_type not in INT_DTYPES or math.prod(dims) > SMALL:
        raise error(source, f"{what} is not a short int64/int32 tensor")
    count = math.prod(dims)
    if proto.data_location == TensorProto.EXTERNAL:
        raise error(source, f"{what} keeps its values in an external file")
    if proto.HasField("raw_data"):
        dtype = np.dtype(INT_DTYPES[proto.data_type]).newbyteorder("<")
        if len(proto.raw_data) != count * dtype.itemsize:
            raise error(source, f"{what} declares {count} values but holds {len(proto.raw_data)} bytes")
        return [int(v) for v in np.frombuffer(proto.raw_data, dtype=dtype)]
    values = proto.int64_data if proto.data_type == TensorProto.INT64 else proto.int32_data
    if len(values) != count:
        raise error(source, f"{what} declares {count} values but holds {len(values)}")
    return [int(v) for v in values]


def small_float(proto: TensorProto, source: str, what: str) -> float:
    if math.prod(int(d) for d in proto.dims) != 1 or proto.data_type not in DTYPES:
        raise error(source, f"{what} is not one floating-point value")
    return float(tensor_array(TensorRef(proto), source, what, None).reshape(-1)[0])


# --- the graph --------------------------------------------------------------------------------------------------

def _opset(model: onnx.ModelProto, source: str) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    if "" not in versions and "ai.onnx" not in versions:
        raise error(source, "the model imports no version of the standard ONNX operator set")
    version = int(versions.get("", versions.get("ai.onnx")))
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise error(source, f"opset {version} is not supported (this onnx knows opsets {MIN_OPSET} to {MAX_OPSET})")
    return version


def _topological(nodes, known: set, source: str) -> list:
    """The nodes in an order where every node's inputs are produced before it; a ValueError when the graph
    has a cycle (or a dangling input)."""
    produced = set(known)
    pending, order = list(nodes), []
    while pending:
        ready = [n for n in pending if all(i == "" or i in produced for i in n.input)]
        if not ready:
            first = pending[0]
            missing = next(i for i in first.input if i and i not in produced)
            producers = {o for n in pending for o in n.output}
            why = "the graph has a cycle" if missing in producers else f"its input {missing!r} is produced by no node"
            raise error(source, f"node {first.name or first.output[0]!r} ({first.op_type}): {why}")
        ids = {id(n) for n in ready}
        for n in ready:
            produced.update(o for o in n.output if o)
        order += ready
        pending = [n for n in pending if id(n) not in ids]
    return order


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


FOLDABLE = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze", "Squeeze", "Identity"}


def _small_array(proto: TensorProto):
    """A short inline constant as numpy, or None (large or external ones are weights, not shape arithmetic)."""
    if proto.data_location == TensorProto.EXTERNAL or math.prod(int(d) for d in proto.dims) > SMALL:
        return None
    return onnx.numpy_helper.to_array(proto)


def _fold_one(node, args: list, opset: int) -> np.ndarray | None:
    """One node of shape arithmetic on constants (torch's exporter computes F.pad's pads this way)."""
    t, a = node.op_type, _attrs(node)
    x = args[0]
    if t == "Identity":
        return x
    if t == "ConstantOfShape":
        shape = [int(v) for v in x.reshape(-1)]
        if any(d < 0 for d in shape) or math.prod(shape) > SMALL:
            return None
        value = onnx.numpy_helper.to_array(a["value"]).reshape(-1) if "value" in a else np.zeros(1, np.float32)
        return np.full(shape, value[0], dtype=value.dtype)
    if t == "Concat":
        return np.concatenate(args, axis=int(a.get("axis", 0)))
    if t == "Reshape":
        shape = [int(v) for v in args[1].reshape(-1)]
        shape = [x.shape[i] if d == 0 and not a.get("allowzero", 0) else d for i, d in enumerate(shape)]
        return x.reshape(shape)
    if t == "Transpose":
        return np.transpose(x, a.get("perm"))
    if t == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if t == "Slice":
        if opset < 10:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = args[1].reshape(-1), args[2].reshape(-1)
            axes = args[3].reshape(-1) if len(args) > 3 and args[3] is not None else None
            steps = args[4].reshape(-1) if len(args) > 4 and args[4] is not None else None
        index = [slice(None)] * x.ndim
        for j, axis in enumerate(range(len(starts)) if axes is None else axes):
            step = 1 if steps is None else int(steps[j])
            big = np.iinfo(np.int64).max // 2
            start, end = int(np.clip(starts[j], -big, big)), int(np.clip(ends[j], -big, big))
            index[int(axis)] = slice(start, end, step)
        return x[tuple(index)]
    if t in ("Unsqueeze", "Squeeze"):
        axes = a.get("axes") if opset < 13 else (list(args[1].reshape(-1)) if len(args) > 1 else None)
        if t == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(int(v) for v in axes))
        for axis in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
            x = np.expand_dims(x, axis)
        return x
    return None


def _fold_constants(nodes: list, consts: dict, opset: int, source: str) -> list:
    """Evaluate the nodes whose inputs are all short constants (shape arithmetic); the rest stay."""
    kept = []
    for node in nodes:
        args, foldable = [], node.op_type in FOLDABLE and len(node.output) == 1 and bool(node.input)
        for i in node.input if foldable else ():
            value = None if i == "" else _small_array(consts[i]) if i in consts else None
            if i != "" and value is None:
                foldable = False
                break
            args.append(value)
        if foldable and args[0] is not None:
            try:
                value = _fold_one(node, args, opset)
            except (ValueError, IndexError, TypeError, KeyError, np.exceptions.AxisError) as err:
                raise error(source, f"node {node.name or node.output[0]!r} ({node.op_type}): cannot evaluate "
                                    f"its constant inputs ({err})") from None
            if value is not None and value.size <= SMALL:
                consts[node.output[0]] = onnx.numpy_helper.from_array(np.ascontiguousarray(value), node.output[0])
                continue
        kept.append(node)
    return kept


def read_graph(model: onnx.ModelProto, source: str, base_dir: str | None = None) -> Graph:
    """The AlexNet chain of an ONNX model; a ValueError naming the first node that is not one."""
    opset = _opset(model, source)
    g = model.graph
    consts: dict[str, TensorProto] = {t.name: t for t in g.initializer}
    nodes = []
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            raise error(source, f"node {node.name or node.output[0]!r} ({node.domain}.{node.op_type}): "
                                f"operator domain {node.domain!r} is not supported")
        if node.op_type == "Constant":
            a = _attrs(node)
            if "value" not in a or len(node.output) != 1:
                raise error(source, f"node {node.name or node.output[0]!r} (Constant): only tensor constants "
                                    f"are supported")
            consts[node.output[0]] = a["value"]
        else:
            nodes.append(node)
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise error(source, f"an AlexNet has one input, this graph has {len(inputs)}"
                            + (f" ({', '.join(i.name for i in inputs[:4])})" if inputs else ""))
    nodes = _fold_constants(_topological(nodes, set(consts) | {inputs[0].name}, source), consts, opset, source)
    dims = inputs[0].type.tensor_type.shape.dim
    input_shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    consumers: dict[str, list] = {}
    for node in nodes:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in g.output}
    ops, cur, done = [], inputs[0].name, set()
    while True:
        users = consumers.get(cur, [])
        if not users:
            break
        if len(users) > 1:
            raise error(source, f"node {users[1].name or users[1].output[0]!r} ({users[1].op_type}): tensor "
                                f"{cur!r} feeds {len(users)} nodes; an AlexNet is one chain of layers")
        node = users[0]
        if id(node) in done:
            raise error(source, f"node {node.name!r} ({node.op_type}): the graph has a cycle")
        done.add(id(node))
        op = _op(node, cur, consts, consumers, opset, source, done)
        ops.append(op)
        cur = op.attrs.pop("_out", node.output[0])
        if cur in outputs and not consumers.get(cur):
            break
    if cur not in outputs:
        raise error(source, f"the chain from input {inputs[0].name!r} ends at tensor {cur!r}, which is not a graph "
                            f"output")
    meta = {p.key: p.value for p in model.metadata_props}
    return Graph(source, inputs[0].name, input_shape, ops, opset, meta, base_dir)


def _const(consts, name, node, source, what) -> TensorProto:
    if name not in consts:
        raise error(source, f"node {node.name or node.output[0]!r} ({node.op_type}): its {what} {name!r} is not a "
                            f"constant (weights must be initializers or Constant nodes)")
    return consts[name]


def _op(node, cur, consts, consumers, opset, source, done) -> Op:
    t, a = node.op_type, _attrs(node)
    label = f"node {node.name or node.output[0]!r} ({t})"
    if node.input[0] != cur and t != "MatMul":
        raise error(source, f"{label}: the chain enters at its input {list(node.input).index(cur)}, not 0")
    extra_outputs = [o for o in node.output[1:] if o and consumers.get(o)]
    if extra_outputs:
        raise error(source, f"{label}: its second output {extra_outputs[0]!r} is used; an AlexNet uses only the first")
    if t in ("Identity", "Dropout") or (t == "Cast" and a.get("to") in DTYPES):  # a float16 export's LRN casts
        return Op("identity", node)
    if t == "Relu":
        return Op("relu", node)
    if t == "Softmax":
        return Op("softmax", node, {"axis": a.get("axis", 1 if opset < 13 else -1)})
    if t == "Conv":
        if len(node.input) < 2:
            raise error(source, f"{label}: no weight input")
        w = TensorRef(_const(consts, node.input[1], node, source, "weight"))
        has_bias = len(node.input) > 2 and node.input[2]
        b = TensorRef(_const(consts, node.input[2], node, source, "bias")) if has_bias else None
        if len(w.shape) != 4:
            raise error(source, f"{label}: weight has shape {w.shape}, a 2-D convolution's has 4 dimensions")
        if b is None:
            raise error(source, f"{label}: a convolution without a bias is not an AlexNet layer")
        return Op("conv", node, a, w, b)
    if t == "LRN":
        return Op("lrn", node, {"size": a.get("size"), "alpha": a.get("alpha", 1e-4), "beta": a.get("beta", 0.75),
                                "bias": a.get("bias", 1.0)})
    if t == "MaxPool":
        return Op("maxpool", node, a)
    if t in ("AveragePool", "GlobalAveragePool"):
        return Op("avgpool", node, {**a, "global": t == "GlobalAveragePool"})
    if t == "Pad":
        if opset < 11:
            pads, value = list(a.get("pads", a.get("paddings", []))), float(a.get("value", 0.0))
        else:
            pads = small_ints(_const(consts, node.input[1], node, source, "pads"), source, f"{label}'s pads")
            value = (small_float(_const(consts, node.input[2], node, source, "constant value"), source,
                                 f"{label}'s constant value") if len(node.input) > 2 and node.input[2] else 0.0)
            if len(node.input) > 3 and node.input[3]:
                axes = small_ints(_const(consts, node.input[3], node, source, "axes"), source, f"{label}'s axes")
                full = [0] * 8
                for i, axis in enumerate(axes):
                    full[axis % 4], full[4 + axis % 4] = pads[i], pads[len(axes) + i]
                pads = full
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return Op("pad", node, {"pads": pads, "value": value, "mode": mode})
    if t == "Flatten":
        return Op("flatten", node, {"axis": a.get("axis", 1)})
    if t == "Reshape":
        shape = (list(a.get("shape", [])) if opset < 5 else
                 small_ints(_const(consts, node.input[1], node, source, "shape"), source, f"{label}'s shape"))
        return Op("flatten", node, {"shape": shape})
    if t == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise error(source, f"{label}: transA, alpha or beta other than the defaults is not a dense layer")
        w = TensorRef(_const(consts, node.input[1], node, source, "weight"), transpose=not a.get("transB", 0))
        if len(node.input) < 3 or not node.input[2]:
            raise error(source, f"{label}: a dense layer without a bias is not an AlexNet layer")
        b = TensorRef(_const(consts, node.input[2], node, source, "bias"))
        return Op("dense", node, a, w, b)
    if t == "MatMul":
        if node.input[0] == cur and node.input[1] in consts:  # x @ M: a dense layer (with the Add) or pool cols
            m = TensorRef(consts[node.input[1]], transpose=True)
            users = consumers.get(node.output[0], [])
            if (len(users) == 1 and users[0].op_type == "Add" and len(m.shape) == 2
                    and any(i in consts for i in users[0].input)):
                add = users[0]
                bias_name = next(i for i in add.input if i != node.output[0])
                done.add(id(add))
                return Op("dense", node, {"_out": add.output[0]}, m,
                          TensorRef(_const(consts, bias_name, add, source, "bias")))
            return Op("poolmat", node, {"side": "cols"}, m)
        if node.input[1] == cur and node.input[0] in consts:  # M @ x: pooling over rows
            return Op("poolmat", node, {"side": "rows"}, TensorRef(consts[node.input[0]]))
        raise error(source, f"{label}: neither of its inputs is a constant matrix")
    raise error(source, f"{label}: {t} is not a layer of any AlexNet")


# --- the variant the structure allows, and the spec checked node by node --------------------------------------

LRN_RTOL = 1e-5  # files store alpha as float32


def signature(graph: Graph) -> list | None:
    """The order of conv, LRN and max-pool ops before the first dense one, LRN with (size, alpha/size, beta,
    bias): the form weights_convert.caffe's layer signatures take. None when it has neither LRN nor pool."""
    sig = []
    for op in graph.ops:
        if op.kind == "dense":
            break
        if op.kind == "conv":
            sig.append(("conv",))
        elif op.kind == "lrn":
            size = int(op.attrs["size"] or 0)
            sig.append(("lrn", size, float(op.attrs["alpha"]) / size if size else math.nan,
                        float(op.attrs["beta"]), float(op.attrs["bias"]), 0))
        elif op.kind == "maxpool":
            sig.append(("maxpool",))
    return sig if any(s[0] != "conv" for s in sig) else None


def _pair(attrs, key, default):
    v = list(attrs.get(key, [default, default]))
    if len(v) != 2:
        raise ValueError(f"{key} {v} is not for a 2-D op")
    return v


def _geometry(op: Op, pad: Op | None, size: int, axis: int) -> tuple[int, int]:
    """(pad before, output size) along one spatial axis (0: H, 1: W) of a conv or max pool, with an explicit
    Pad before it, for an input of `size`: two ops that agree on both compute the same windows."""
    a = op.attrs
    kernel = _pair(a, "kernel_shape", op.weight.shape[2] if op.weight is not None else None)[axis]
    stride = _pair(a, "strides", 1)[axis]
    pads = list(a.get("pads", [0, 0, 0, 0]))
    before, after = pads[axis], pads[2 + axis]
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = max(0, (-(-size // stride) - 1) * stride + kernel - size)
        before = total // 2 if auto == "SAME_UPPER" else total - total // 2
        after = total - before
    elif auto == "VALID":
        before = after = 0
    if pad is not None:
        pp = pad.attrs["pads"]
        before, after = before + pp[2 + axis], after + pp[6 + axis]
    span = size + before + after - kernel
    if span < 0:
        raise ValueError("the window is larger than the padded input")
    out = (-(-span // stride) if a.get("ceil_mode", 0) else span // stride) + 1
    return before, out


def check_against(graph: Graph, spec) -> bool:
    """Node by node, the chain must compute `spec` (kernels, strides, pads as the windows they make, groups,
    LRN constants, the adaptive pool's bins, the flatten); a ValueError names the first node that does not.
    Returns True when the graph ends in a Softmax."""
    from alexnet_parity.common import (LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, MaxPool, ReLU,
                                       adaptive_pool_matrix)

    source = graph.source
    if len(graph.input_shape) != 4 or graph.input_shape[1:] not in ((spec.in_channels, spec.input_size,
                                                                      spec.input_size), (spec.in_channels, None, None)):
        raise error(source, f"input {graph.input_name!r} has shape {graph.input_shape}; {spec.describe()} takes "
                            f"(N, {', '.join(map(str, spec.input_shape))})")
    ops = [op for op in graph.ops if op.kind != "identity"]
    softmax = bool(ops) and ops[-1].kind == "softmax"
    if softmax:
        if ops[-1].attrs["axis"] not in (1, -1):
            raise error(source, f"{ops[-1].label}: softmax over axis {ops[-1].attrs['axis']}, not the classes")
        ops = ops[:-1]
    layers = [layer for layer in spec.layers if not isinstance(layer, Dropout)]
    i = 0

    def take():
        nonlocal i
        op = ops[i] if i < len(ops) else None
        i += op is not None
        return op

    def fail(op, layer, why):
        raise error(source, f"{op.label} does not fit layer {layer.name} of {spec.describe()}: {why}")

    for layer in layers:
        op = ops[i] if i < len(ops) else None
        if op is None:
            raise error(source, f"the graph ends after {ops[-1].label if ops else 'its input'}; "
                                f"{spec.describe()} continues with {layer.name} ({layer.kind})")
        if isinstance(layer, AdaptiveAvgPool):
            _, h, w = layer.in_shape
            out = layer.output_size
            if op.kind == "avgpool":
                take()
                a = op.attrs
                uniform = h % out == 0 and w % out == 0
                bins = [h // out, w // out]
                ok = uniform and (a["global"] and out == 1 or not a["global"] and _pair(a, "kernel_shape", 0) == bins
                                  and _pair(a, "strides", 1) == bins and not any(a.get("pads", [])))
                if not ok:
                    fail(op, layer, f"an average pool that is not PyTorch's {h}x{w} -> {out}x{out} bins")
            elif op.kind == "poolmat":
                got = {}
                while i < len(ops) and ops[i].kind == "poolmat":
                    m = take()
                    got[m.attrs["side"]] = (m, tensor_array(m.weight, source, m.label, graph.base_dir)
                                            if math.prod(m.weight.shape) <= (1 << 20) else None)
                for side, size in (("rows", h), ("cols", w)):
                    m, matrix = got.get(side, (op, None))
                    want = adaptive_pool_matrix(size, out)
                    if matrix is None or matrix.shape != want.shape or not np.allclose(matrix, want, rtol=1e-6, atol=0):
                        fail(m, layer, f"not PyTorch's adaptive-pool bins over the {side} ({size} -> {out})")
            elif (h, w) != (out, out):
                fail(op, layer, f"expected the adaptive average pool {h}x{w} -> {out}x{out}")
            continue
        op = take()
        pad = None
        if op.kind == "pad" and isinstance(layer, (Conv, MaxPool)):
            pad, op = op, take()
            if op is None:
                raise error(source, f"{pad.label}: the graph ends after a Pad")
            p = pad.attrs
            fill_ok = p["value"] == 0.0 or (isinstance(layer, MaxPool) and p["value"] < -3e38)
            if p["mode"] != "constant" or len(p["pads"]) != 8 or any(p["pads"][j] for j in (0, 1, 4, 5)) \
                    or min(p["pads"]) < 0 or not fill_ok:
                fills = "0 or -inf" if isinstance(layer, MaxPool) else "0"
                fail(pad, layer, f"only a constant pad of H and W ({fills}) may come before {layer.kind}")
        want = {Conv: "conv", ReLU: "relu", LRN: "lrn", MaxPool: "maxpool", Flatten: "flatten",
                Dense: "dense"}[type(layer)]
        if op.kind != want:
            fail(op, layer, f"expected {want}")
        if isinstance(layer, (Conv, MaxPool)):
            a = op.attrs
            try:
                if any(d != 1 for d in a.get("dilations", [1, 1])):
                    fail(op, layer, f"dilations {list(a['dilations'])}")
                kernel = _pair(a, "kernel_shape", layer.kernel)
                strides = _pair(a, "strides", 1)
                got = [_geometry(op, pad, layer.in_shape[1 + ax], ax) for ax in (0, 1)]
            except ValueError as err:
                fail(op, layer, str(err))
            if kernel != [layer.kernel] * 2 or strides != [layer.stride] * 2:
                fail(op, layer, f"kernel {kernel} stride {strides}, expected {layer.kernel} stride {layer.stride}")
            want_geo = [(layer.padding[ax][0], layer.out_shape[1 + ax]) for ax in (0, 1)]
            if got != want_geo:
                fail(op, layer, f"its padding makes {got[0][1]}x{got[1][1]} outputs from pad {got[0][0]},{got[1][0]} "
                                f"before; the spec has {layer.out_shape[1]}x{layer.out_shape[2]} from pads "
                                f"{layer.padding}")
            if isinstance(layer, Conv) and int(a.get("group", 1)) != layer.groups:
                fail(op, layer, f"group {a.get('group', 1)}, expected {layer.groups}")
        elif isinstance(layer, LRN):
            a = op.attrs
            consts = [(a["alpha"] / a["size"], layer.scale), (a["beta"], layer.beta), (a["bias"], layer.k)]
            if a["size"] != layer.size or not all(math.isclose(x, y, rel_tol=LRN_RTOL) for x, y in consts):
                fail(op, layer, f"LRN size={a['size']} alpha={a['alpha']:g} beta={a['beta']:g} bias={a['bias']:g}; "
                                f"expected size={layer.size} alpha={layer.scale * layer.size:g} (ONNX divides it by "
                                f"size) beta={layer.beta:g} bias={layer.k:g}")
        elif isinstance(layer, Flatten):
            a = op.attrs
            features = layer.out_shape[0]
            if "axis" in a and a["axis"] != 1:
                fail(op, layer, f"Flatten axis {a['axis']}, expected 1")
            if "shape" in a and not (len(a["shape"]) == 2 and a["shape"][1] in (-1, features)
                                     and (a["shape"][0] in (-1, 0) or a["shape"][1] == features)):
                fail(op, layer, f"Reshape to {a['shape']}, expected (N, {features})")
    if i < len(ops):
        raise error(source, f"{ops[i].label} comes after the last layer of {spec.describe()}")
    return softmax
