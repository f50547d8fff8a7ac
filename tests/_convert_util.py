"""Shared by the tests/test_convert_*.py files: the containers each format writes, and makers of *genuine*
third-party files that do not go through weights_convert's writers (torchvision's own module layout,
Caffe's schema encoded by Google's protobuf, TF-slim's variables saved by a TF1 Saver)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading

import numpy as np

# torchvision's AlexNet class, verbatim (torchvision does not import beside the CPU torch build)
from alexnet_parity.torch_impl.bench import transcribed_torchvision_alexnet as torchvision_alexnet  # noqa: F401

# (format, file name ending, save options): every container each format writes
CONTAINERS = [
    ("canonical", ".safetensors", {}),
    ("torch", ".pt", {}),
    ("torchvision", ".pth", {}),
    ("keras", ".weights.h5", {}),
    ("keras", ".keras", {}),
    ("flax", ".msgpack", {}),
    ("flax", ".orbax", {}),
    ("caffe", ".caffemodel", {"container": "layer"}),
    ("caffe", ".v1.caffemodel", {"container": "layers"}),
    ("slim", ".ckpt", {}),
]
def container_id(c) -> str:
    return f"{c[0]}{c[1]}"


def frameworks_present(fmt: str) -> bool:
    import importlib.util

    from alexnet_parity.weights_convert import get_format

    return all(importlib.util.find_spec(name) is not None for name in get_format(fmt).frameworks)


def same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                    and np.array_equal(a[k], b[k]) for k in a)


def one_column_alexnet(num_classes: int = 1000):
    """The common one-GPU PyTorch re-implementation of the paper (an `net` Sequential with LRN)."""
    import torch
    import torch.nn as nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 96, kernel_size=11, stride=4), nn.ReLU(),
                nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2), nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(),
                nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2), nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
                nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
                nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.net(x), 1))

    return AlexNet()


# --- Caffe's schema, encoded by Google's protobuf (an encoder independent of ours) -------------------------

def caffe_messages(packed_data: bool = True) -> dict:
    """Message classes for the parts of caffe.proto (BVLC) that a caffemodel of AlexNet uses."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    fdp = descriptor_pb2.FileDescriptorProto(name=f"caffe_subset_{packed_data}.proto", package="caffe",
                                             syntax="proto2")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, *rest in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if rest and rest[0]:
                f.type_name = f".caffe.{rest[0]}"
            if len(rest) > 1 and rest[1]:
                f.options.packed = True

    message("BlobShape", [("dim", 1, F.TYPE_INT64, REP, None, True)])
    message("BlobProto", [("shape", 7, F.TYPE_MESSAGE, OPT, "BlobShape"),
                          ("data", 5, F.TYPE_FLOAT, REP, None, packed_data),
                          ("double_data", 8, F.TYPE_DOUBLE, REP, None, True),
                          ("num", 1, F.TYPE_INT32, OPT), ("channels", 2, F.TYPE_INT32, OPT),
                          ("height", 3, F.TYPE_INT32, OPT), ("width", 4, F.TYPE_INT32, OPT)])
    message("ConvolutionParameter", [("num_output", 1, F.TYPE_UINT32, OPT), ("pad", 3, F.TYPE_UINT32, REP),
                                     ("kernel_size", 4, F.TYPE_UINT32, REP), ("group", 5, F.TYPE_UINT32, OPT),
                                     ("stride", 6, F.TYPE_UINT32, REP)])
    message("InnerProductParameter", [("num_output", 1, F.TYPE_UINT32, OPT)])
    message("LRNParameter", [("local_size", 1, F.TYPE_UINT32, OPT), ("alpha", 2, F.TYPE_FLOAT, OPT),
                             ("beta", 3, F.TYPE_FLOAT, OPT), ("k", 5, F.TYPE_FLOAT, OPT)])
    message("PoolingParameter", [("pool", 1, F.TYPE_INT32, OPT), ("kernel_size", 2, F.TYPE_UINT32, OPT),
                                 ("stride", 3, F.TYPE_UINT32, OPT)])
    message("DropoutParameter", [("dropout_ratio", 1, F.TYPE_FLOAT, OPT)])
    message("TransformationParameter", [("crop_size", 3, F.TYPE_UINT32, OPT), ("mirror", 2, F.TYPE_BOOL, OPT)])
    message("DataParameter", [("source", 1, F.TYPE_STRING, OPT), ("crop_size", 5, F.TYPE_UINT32, OPT)])
    params = [("convolution_param", "ConvolutionParameter"), ("inner_product_param", "InnerProductParameter"),
              ("lrn_param", "LRNParameter"), ("pooling_param", "PoolingParameter"),
              ("dropout_param", "DropoutParameter"), ("transform_param", "TransformationParameter"),
              ("data_param", "DataParameter")]
    new_numbers = dict(zip([p for p, _ in params], (106, 117, 118, 121, 108, 100, 107)))
    v1_numbers = dict(zip([p for p, _ in params], (10, 17, 18, 19, 12, 36, 11)))
    message("LayerParameter", [("name", 1, F.TYPE_STRING, OPT), ("type", 2, F.TYPE_STRING, OPT),
                               ("bottom", 3, F.TYPE_STRING, REP), ("top", 4, F.TYPE_STRING, REP),
                               ("blobs", 7, F.TYPE_MESSAGE, REP, "BlobProto"),
                               *[(p, new_numbers[p], F.TYPE_MESSAGE, OPT, t) for p, t in params]])
    message("V1LayerParameter", [("bottom", 2, F.TYPE_STRING, REP), ("top", 3, F.TYPE_STRING, REP),
                                 ("name", 4, F.TYPE_STRING, OPT), ("type", 5, F.TYPE_INT32, OPT),
                                 ("blobs", 6, F.TYPE_MESSAGE, REP, "BlobProto"),
                                 *[(p, v1_numbers[p], F.TYPE_MESSAGE, OPT, t) for p, t in params]])
    message("NetParameter", [("name", 1, F.TYPE_STRING, OPT), ("input", 3, F.TYPE_STRING, REP),
                             ("input_dim", 4, F.TYPE_INT32, REP),
                             ("layer", 100, F.TYPE_MESSAGE, REP, "LayerParameter"),
                             ("layers", 2, F.TYPE_MESSAGE, REP, "V1LayerParameter")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{m.name}"))
            for m in fdp.message_type}


V1_CODES = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14,
            "Dropout": 6, "SoftmaxWithLoss": 21, "Accuracy": 1}


def bvlc_net_bytes(spec, weights: dict, container: str, packed_data: bool = True, with_structure: bool = True,
                   crop_size: int | None = None, crop_in: str = "transform_param") -> bytes:
    """A train_val-style caffemodel of a 96-kernel spec as BVLC's files lay it out: a Data layer, conv/relu/
    norm/pool in the spec's order, fc/relu/drop, and loss/accuracy layers; V1 blobs with num/channels/height/
    width (fc weights (1, 1, out, in), biases (1, 1, 1, out)). with_structure=False: parameter layers only.
    crop_in: where the data layer says its crop size, transform_param or (older nets) data_param."""
    M = caffe_messages(packed_data)
    net = M["NetParameter"](name="AlexNet")
    new = container == "layer"

    def add(name, type_, bottom, top):
        layer = net.layer.add() if new else net.layers.add()
        layer.name = name
        if new:
            layer.type = type_
        else:
            layer.type = V1_CODES[type_]
        if bottom:
            layer.bottom.append(bottom)
        layer.top.append(top)
        return layer

    def blob(layer, array, legacy):
        b = layer.blobs.add()
        if new:
            b.shape.dim.extend(array.shape)
        else:
            for field, dim in zip(("num", "channels", "height", "width"), legacy):
                setattr(b, field, dim)
        b.data.extend(np.asarray(array, dtype=np.float32).ravel().tolist())

    if with_structure:
        data = add("data", "Data", None, "data")
        data.top.append("label")
        data.data_param.source = "examples/imagenet/ilsvrc12_train_lmdb"
        getattr(data, crop_in).crop_size = crop_size or spec.input_size
    bottom = "data"
    for layer in spec.layers:
        kind = layer.kind
        if kind == "conv":
            l = add(layer.name, "Convolution", bottom, layer.name)
            p = l.convolution_param
            p.num_output, p.group = layer.out_channels, layer.groups
            p.kernel_size.append(layer.kernel)
            p.stride.append(layer.stride)
            if layer.padding[0][0]:
                p.pad.append(layer.padding[0][0])
            w = weights[f"{layer.name}.weight"]
            blob(l, w, w.shape)
            blob(l, weights[f"{layer.name}.bias"], (1, 1, 1, w.shape[0]))
            bottom = layer.name
        elif kind == "dense":
            l = add(layer.name, "InnerProduct", bottom, layer.name)
            l.inner_product_param.num_output = layer.out_features
            w = weights[f"{layer.name}.weight"]
            blob(l, w, (1, 1, *w.shape))
            blob(l, weights[f"{layer.name}.bias"], (1, 1, 1, w.shape[0]))
            bottom = layer.name
        elif not with_structure:
            continue
        elif kind == "relu":
            add(layer.name, "ReLU", bottom, bottom)
        elif kind == "lrn":
            l = add(layer.name, "LRN", bottom, layer.name)
            l.lrn_param.local_size, l.lrn_param.alpha = layer.size, layer.scale * layer.size
            l.lrn_param.beta, l.lrn_param.k = layer.beta, layer.k
            bottom = layer.name
        elif kind == "maxpool":
            l = add(layer.name, "Pooling", bottom, layer.name)
            l.pooling_param.pool, l.pooling_param.kernel_size, l.pooling_param.stride = 0, layer.kernel, layer.stride
            bottom = layer.name
        elif kind == "dropout":
            add(layer.name, "Dropout", bottom, bottom).dropout_param.dropout_ratio = layer.rate
    if with_structure:
        loss = add("loss", "SoftmaxWithLoss", bottom, "loss")
        loss.bottom.append("label")
    return net.SerializeToString()


def bvlc_deploy_prototxt(spec, v1: bool = False) -> str:
    """A deploy.prototxt in BVLC's style (input_dim lines; V1 enum types with v1=True)."""
    lines = ['name: "AlexNet"', 'input: "data"', "input_dim: 10", "input_dim: 3",
             f"input_dim: {spec.input_size}", f"input_dim: {spec.input_size}"]
    types = {"conv": "Convolution", "relu": "ReLU", "lrn": "LRN", "maxpool": "Pooling", "dense": "InnerProduct",
             "dropout": "Dropout"}
    enums = {"conv": "CONVOLUTION", "relu": "RELU", "lrn": "LRN", "maxpool": "POOLING", "dense": "INNER_PRODUCT",
             "dropout": "DROPOUT"}
    for layer in spec.layers:
        if layer.kind not in types:
            continue
        t = enums[layer.kind] if v1 else f'"{types[layer.kind]}"'
        body = [f'  name: "{layer.name}"', f"  type: {t}"]
        if layer.kind == "conv":
            body.append(f"  convolution_param {{ num_output: {layer.out_channels} kernel_size: {layer.kernel} "
                        f"stride: {layer.stride} pad: {layer.padding[0][0]} group: {layer.groups} }}")
        elif layer.kind == "lrn":
            body.append(f"  lrn_param {{ local_size: {layer.size} alpha: {layer.scale * layer.size:g} "
                        f"beta: {layer.beta} k: {layer.k:g} }}  # Caffe divides alpha by local_size")
        elif layer.kind == "maxpool":
            body.append(f"  pooling_param {{ pool: MAX kernel_size: {layer.kernel} stride: {layer.stride} }}")
        elif layer.kind == "dense":
            body.append(f"  inner_product_param {{ num_output: {layer.out_features} }}")
        lines.append(("layers" if v1 else "layer") + " {\n" + "\n".join(body) + "\n}")
    return "\n".join(lines) + "\n"


# --- TF-slim: variables created under the alexnet_v2 scope, saved by a TF1 Saver -----------------------------

def slim_checkpoint(prefix: str, spec, weights: dict, extra_step: bool = True) -> None:
    """A checkpoint as TF-slim's alexnet_v2 training writes it: variables named alexnet_v2/<layer>/weights
    (HWIO; fc6 a (h, w, 256, 4096) conv, fc7/fc8 1x1 convs) and .../biases, a global_step and Momentum slots."""
    import tensorflow as tf

    values = {}
    for layer in spec.param_layers:
        w = weights[f"{layer.name}.weight"]
        if layer.kind == "dense":
            c, h, wd = spec.layer("flatten").in_shape if layer.name == "fc6" else (layer.in_features, 1, 1)
            w = w.reshape(w.shape[0], c, h, wd)
        values[f"{layer.name}/weights"] = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        values[f"{layer.name}/biases"] = weights[f"{layer.name}.bias"]
    graph = tf.Graph()
    with graph.as_default():
        variables, feeds = [], {}
        with tf.compat.v1.variable_scope("alexnet_v2"):
            for name, value in values.items():
                v = tf.compat.v1.get_variable(name, shape=value.shape, dtype=tf.float32,
                                              initializer=tf.compat.v1.zeros_initializer())
                variables.append((v, value))
                slot = tf.compat.v1.get_variable(name + "/Momentum", shape=value.shape, dtype=tf.float32,
                                                 initializer=tf.compat.v1.zeros_initializer())
                del slot  # an optimizer slot: the reader must ignore it
        if extra_step:
            tf.compat.v1.train.get_or_create_global_step()
        placeholders = {v: tf.compat.v1.placeholder(tf.float32, value.shape) for v, value in variables}
        assigns = [v.assign(placeholders[v]) for v, _ in variables]
        feeds = {placeholders[v]: value for v, value in variables}
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(assigns, feeds)
            saver.save(sess, prefix, write_meta_graph=False)
    assert os.path.exists(prefix + ".index")


def slim_forward(spec, prefix: str, x_nchw: np.ndarray) -> np.ndarray:
    """TF-slim alexnet_v2's forward pass (eval), computed with tf.nn from the checkpoint's own variables."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    var = lambda name: tf.constant(reader.get_tensor(f"alexnet_v2/{name}"))  # noqa: E731
    x = tf.constant(np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
    conv = lambda x, name, stride, pad: tf.nn.relu(tf.nn.bias_add(  # noqa: E731
        tf.nn.conv2d(x, var(f"{name}/weights"), stride, pad), var(f"{name}/biases")))
    pool = lambda x: tf.nn.max_pool2d(x, 3, 2, "VALID")  # noqa: E731
    x = pool(conv(x, "conv1", 4, "VALID"))
    x = pool(conv(x, "conv2", 1, "SAME"))
    x = conv(conv(conv(x, "conv3", 1, "SAME"), "conv4", 1, "SAME"), "conv5", 1, "SAME")
    x = pool(x)
    x = conv(x, "fc6", 1, "VALID")
    x = conv(x, "fc7", 1, "VALID")
    x = tf.nn.bias_add(tf.nn.conv2d(x, var("fc8/weights"), 1, "VALID"), var("fc8/biases"))
    return tf.squeeze(x, [1, 2]).numpy()


@contextlib.contextmanager
def no_hang(seconds: float):
    """Interrupt a reader that loops (SIGALRM, main thread only; elsewhere the test just runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stuck(*_):
        raise TimeoutError(f"a reader took more than {seconds:.0f} s: hung?")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
