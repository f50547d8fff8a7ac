"""slim: a TF-slim alexnet_v2 checkpoint (a TensorFlow V2 checkpoint prefix: PREFIX.index + PREFIX.data-*).

Layout (exactly these variable names; slim's graph creates them under the alexnet_v2 scope):

| variable                    | shape                   | canonical                                   |
|-----------------------------|-------------------------|---------------------------------------------|
| alexnet_v2/convN/weights    | (kh, kw, in, out) HWIO  | convN.weight = transpose(3, 2, 0, 1)        |
| alexnet_v2/fc6/weights      | (h, w, 256, 4096)       | fc6.weight (4096, 256*h*w) in C,H,W order   |
| alexnet_v2/fc7/weights      | (1, 1, 4096, 4096)      | fc7.weight = [0, 0].T                       |
| alexnet_v2/fc8/weights      | (1, 1, 4096, classes)   | fc8.weight = [0, 0].T                       |
| alexnet_v2/{layer}/biases   | (out,)                  | {layer}.bias                                |

fc6 is a VALID convolution whose kernel covers pool5's whole h x w map (5x5 at 224), which is exactly a
dense layer: its (h, w, c, o) kernel is an HWIO conv kernel, so conv_hwio_to_oihw then a reshape gives the
canonical C,H,W row order. Other variables (global_step, optimizer slots, moving averages) are ignored.
Only slim-v2 has this graph, so only slim-v2 is written or read. Read with tf.train.load_checkpoint;
written with tf.raw_ops.SaveV2, which stores tensors under exactly the names given (a tf.train.Checkpoint
would add its object-graph names), so tf.train.list_variables shows the slim names.
"""
from __future__ import annotations

import os
import re
import struct

import numpy as np

from alexnet_parity.common import Spec, conv_hwio_to_oihw, conv_oihw_to_hwio

from ._common import atomic_prefix, finish, resolve_spec, shape_str
from .registry import Format

SCOPE = "alexnet_v2"
VARIANT = "slim-v2"
CONVS = tuple(f"conv{i}" for i in range(1, 6))
FCS = ("fc6", "fc7", "fc8")
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def checkpoint_prefix(path: str) -> str:
    """The prefix of a checkpoint named by its prefix, its .index or .data-* file, or its directory
    (the newest checkpoint its `checkpoint` state file names)."""
    if os.path.isdir(path):
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path}: directory holds no TensorFlow checkpoint")
        return latest
    if path.endswith(".index"):
        return path[:-len(".index")]
    if _DATA_SUFFIX.search(path):
        return _DATA_SUFFIX.sub("", path)
    return path


def is_checkpoint(path: str) -> bool:
    return os.path.isfile(checkpoint_prefix(path) + ".index") if not os.path.isdir(path) else (
        os.path.isfile(os.path.join(path, "checkpoint")))


# --- the .index, read by us before TensorFlow sees it --------------------------------------------------------
# TensorFlow's reader aborts the process (a CHECK) on a negative dimension, and blocks on a data shard that
# is a FIFO; so the index (a LevelDB table of BundleEntryProto, tensorflow/core/protobuf/tensor_bundle.proto)
# is checked first: every shape non-negative and of a sane size, every tensor's bytes inside its shard, and
# every shard a regular file beside the index.

MAX_INDEX = 64 << 20
MAX_ENTRIES = 100_000
DTYPE_SIZES = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 9: 8, 10: 1, 14: 2, 17: 2, 19: 2, 22: 4, 23: 8}


def _table_block(data: bytes, offset: int, size: int, what: str) -> list[tuple[bytes, memoryview]]:
    """The (key, value) entries of one LevelDB table block (prefix-compressed keys, restart array)."""
    from . import protowire as pw

    if offset < 0 or size < 4 or offset + size + 5 > len(data):
        raise ValueError(f"{what}: a table block lies outside the file")
    if data[offset + size] != 0:
        raise ValueError(f"{what}: a compressed table block (TensorFlow writes none)")
    block = memoryview(data)[offset:offset + size]
    restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise ValueError(f"{what}: a malformed table block")
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = pw._read_varint(block, pos, what)
        unshared, pos = pw._read_varint(block, pos, what)
        length, pos = pw._read_varint(block, pos, what)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError(f"{what}: a malformed table entry")
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        entries.append((key, block[pos:pos + length]))
        pos += length
        if len(entries) > MAX_ENTRIES:
            raise ValueError(f"{what}: more than {MAX_ENTRIES} entries")
    return entries


def _handle(buf, pos: int, what: str) -> tuple[int, int, int]:
    from . import protowire as pw

    offset, pos = pw._read_varint(buf, pos, what)
    size, pos = pw._read_varint(buf, pos, what)
    return offset, size, pos


def check_index(prefix: str, path: str) -> None:
    """Refuse, with one line, what would hang or abort TensorFlow's checkpoint reader (see above)."""
    from . import protowire as pw

    from ._common import check_member, check_regular

    index = prefix + ".index"
    what = f"{path}: {os.path.basename(index)}"
    if check_regular(index, path, "index") > MAX_INDEX:
        raise ValueError(f"{what}: over {MAX_INDEX >> 20} MiB: not a checkpoint index")
    with open(index, "rb") as fh:
        data = fh.read()
    if len(data) < 48 or data[-8:] != TABLE_MAGIC:
        raise ValueError(f"{what}: not a TensorFlow checkpoint index (no table footer)")
    footer = memoryview(data)[-48:-8]
    _, _, pos = _handle(footer, 0, what)
    offset, size, _ = _handle(footer, pos, what)
    shards, tensors = None, []
    for _, handle in _table_block(data, offset, size, what):
        block_offset, block_size, _ = _handle(handle, 0, what)
        for key, value in _table_block(data, block_offset, block_size, what):
            fields = pw.parse(value, what)
            if key == b"":
                shards = next((pw.signed(v) for n, w, v in fields if n == 1 and w == pw.VARINT), 1)
            else:
                tensors.append((key.decode("utf-8", "replace"), fields))
    if shards is None or not 1 <= shards <= 10_000:
        raise ValueError(f"{what}: no valid bundle header (num_shards {shards})")
    folder = os.path.dirname(os.path.abspath(prefix))
    sizes = [check_member(f"{prefix}.data-{i:05d}-of-{shards:05d}", folder, path, "data shard")
             for i in range(shards)]
    for name, fields in tensors:
        ints = {n: pw.signed(v) for n, w, v in fields if w == pw.VARINT}
        dims = []
        for raw in (v for n, w, v in fields if n == 2 and w == pw.LEN):
            for n, w, dim in pw.parse(raw, what):
                if n == 2 and w == pw.LEN:
                    dims.append(next((pw.signed(v) for k, t, v in pw.parse(dim, what) if k == 1 and t == pw.VARINT), 0))
        if len(dims) > 32:
            raise ValueError(f"{what}: tensor {name!r} has {len(dims)} dimensions (TensorFlow allows 254; "
                             f"no checkpoint of AlexNet has more than 4)")
        if any(d < 0 for d in dims):
            raise ValueError(f"{what}: tensor {name!r} has a negative dimension {tuple(dims)}")
        count = int(np.prod(dims, dtype=object)) if dims else 1
        if count >= 1 << 62:
            raise ValueError(f"{what}: tensor {name!r} declares {count} elements")
        shard, offset, size = ints.get(3, 0), ints.get(4, 0), ints.get(5, 0)
        if any(n == 7 for n, _, _ in fields):  # a partitioned variable: its slices are entries of their own
            continue
        if not 0 <= shard < shards or offset < 0 or size < 0 or offset + size > sizes[shard]:
            raise ValueError(f"{what}: tensor {name!r} lies outside its data shard (shard {shard}, bytes "
                             f"{offset}..{offset + size})")
        itemsize = DTYPE_SIZES.get(ints.get(1, 0))
        if itemsize is not None and count * itemsize != size:
            raise ValueError(f"{what}: tensor {name!r} of shape {tuple(dims)} needs {count * itemsize} bytes, "
                             f"the index says {size}")


def _read_tensors(prefix: str, path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(prefix + ".index"):
        raise FileNotFoundError(f"{path}: no TensorFlow checkpoint ({prefix}.index does not exist)")
    check_index(prefix, path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        wanted = [n for n in shapes if n.startswith(SCOPE + "/") and n.rsplit("/", 1)[-1] in ("weights", "biases")
                  and n.count("/") == 2]
        return {name: reader.get_tensor(name) for name in wanted}
    except (tf.errors.OpError, ValueError, RuntimeError, IndexError, KeyError, OverflowError, TypeError,
            MemoryError) as err:  # TF's checkpoint reader maps its status codes onto these
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable TensorFlow checkpoint (truncated or corrupt?): {first}") from None


def to_canonical(tensors: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    weights = {}
    layers = {name.split("/")[1] for name in tensors}
    unknown = sorted(layers - set(CONVS) - set(FCS))
    if unknown:
        raise ValueError(f"{path}: variable '{SCOPE}/{unknown[0]}/...' is not part of alexnet_v2")
    if not layers:
        raise ValueError(f"{path}: holds no {SCOPE}/... variables: not a TF-slim alexnet_v2 checkpoint")
    for layer in sorted(layers):
        kernel = tensors.get(f"{SCOPE}/{layer}/weights")
        bias = tensors.get(f"{SCOPE}/{layer}/biases")
        for kind, value in (("weights", kernel), ("biases", bias)):
            if value is None:
                raise ValueError(f"{path}: missing variable '{SCOPE}/{layer}/{kind}'")
        if kernel.ndim != 4:
            raise ValueError(f"{path}: variable '{SCOPE}/{layer}/weights' has shape {shape_str(kernel.shape)}, "
                             f"expected a 4-D (kh, kw, in, out) kernel")
        oihw = conv_hwio_to_oihw(kernel)
        if layer in CONVS:
            weights[f"{layer}.weight"] = oihw
        else:  # a conv over the whole map == dense: (out, in, h, w) rows flatten in C,H,W order
            weights[f"{layer}.weight"] = oihw.reshape(oihw.shape[0], -1)
        weights[f"{layer}.bias"] = bias
    return weights


def load(path: str, variant: str | None = None, input_size: int | None = None) -> tuple[Spec, dict]:
    prefix = checkpoint_prefix(path)
    weights = to_canonical(_read_tensors(prefix, path), path)
    spec = resolve_spec({k: v.shape for k, v in weights.items()}, path, variant=variant,
                        input_size=input_size, candidates=None if variant else [VARIANT])
    return finish(spec, weights, path)


def from_canonical(spec: Spec, weights: dict) -> dict[str, np.ndarray]:
    if spec.variant != VARIANT:
        raise ValueError(f"slim holds TF-slim's alexnet_v2 (slim-v2) only, not {spec.variant}; "
                         f"choose another format (canonical, torch, keras, flax, caffe)")
    tensors = {}
    for layer in spec.param_layers:
        w = weights[f"{layer.name}.weight"]
        if layer.kind == "dense":  # fc6 reads the flattened (C, H, W) map, fc7/fc8 a 1x1 one
            c, h, wd = spec.layer("flatten").in_shape if layer.name == "fc6" else (layer.in_features, 1, 1)
            w = w.reshape(w.shape[0], c, h, wd)
        tensors[f"{SCOPE}/{layer.name}/weights"] = conv_oihw_to_hwio(w)
        tensors[f"{SCOPE}/{layer.name}/biases"] = np.ascontiguousarray(weights[f"{layer.name}.bias"])
    return tensors


def save(path: str, spec: Spec, weights: dict) -> None:
    tensors = from_canonical(spec, weights)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # a failed SaveV2 logs a warning besides raising
    import tensorflow as tf

    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory; name the checkpoint prefix, e.g. {path}/model.ckpt")
    prefix = checkpoint_prefix(path)
    with atomic_prefix(prefix, last=(".index",), replaces=sniff, what="a TensorFlow checkpoint file") as tmp:
        names = list(tensors)
        with tf.device("/cpu:0"):
            tf.raw_ops.SaveV2(prefix=tmp, tensor_names=names, shape_and_slices=[""] * len(names),
                              tensors=[tf.constant(tensors[n]) for n in names])


def claims(path: str) -> bool:
    name = os.path.basename(path.rstrip("/"))
    return ".ckpt" in name or name.endswith(".index") or bool(_DATA_SUFFIX.search(name))


TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)  # the footer of a TensorBundle .index (a LevelDB table)


def sniff(path: str) -> bool:
    """A piece of a TF checkpoint: a .index whose last 8 bytes are the table magic, or a .data-* shard
    beside such an index."""
    if not os.path.isfile(path):
        return False
    match = _DATA_SUFFIX.search(path)
    index = path[:match.start()] + ".index" if match else path
    if not index.endswith(".index") or not os.path.isfile(index):
        return False
    try:
        with open(index, "rb") as fh:
            fh.seek(max(0, os.path.getsize(index) - 8))
            return fh.read(8) == TABLE_MAGIC
    except OSError:
        return False


def sniff_checkpoint(path: str) -> bool:
    """For guessing what to read: a TensorFlow checkpoint directory (its `checkpoint` state file), a prefix,
    .index or .data-* path whose .index sniffs as one, or a bare prefix (no file) with a PREFIX.index beside
    it, which the reader then judges. (sniff itself judges one existing file that a save would replace.)"""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "checkpoint"))
    return sniff(checkpoint_prefix(path) + ".index") or (not os.path.exists(path) and os.path.isfile(path + ".index"))


def exists(path: str) -> bool:
    """A checkpoint is named by its prefix, which is no file: its .index is what must exist."""
    return os.path.exists(path) or os.path.exists(checkpoint_prefix(path) + ".index")


FORMAT = Format("slim", load, save, claims, sniff_checkpoint, frameworks=("tensorflow",), holds=VARIANT,
                files="checkpoint prefix (*.ckpt*)", directory="a TensorFlow checkpoint directory", exists=exists)
