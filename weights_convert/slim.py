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


def _read_tensors(prefix: str, path: str) -> dict[str, np.ndarray]:
    import tensorflow as tf

    if not os.path.isfile(prefix + ".index"):
        raise FileNotFoundError(f"{path}: no TensorFlow checkpoint ({prefix}.index does not exist)")
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
