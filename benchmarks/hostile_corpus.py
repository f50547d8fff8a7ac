"""A corpus of hostile inputs for every reader, each converted with `alexnet convert`: prints how many gave a
traceback, hung (over 30 s), wrote outside their destination, and the peak memory.

Inputs (all made here, from small valid checkpoints of every container): random mutations (truncations,
flipped bytes near the headers and anywhere, zeroed runs, garbage), and hand-made ones: the source is a FIFO,
/dev/zero, /dev/null, a directory, a link loop or empty; Orbax entries that are FIFOs, links to /dev/zero or
out of the folder, deep nesting, forged array sizes; .weights.h5 external links (to a FIFO, /dev/zero),
compressed bombs, absurd or negative shapes; .keras configs declaring 200,000 classes, other classes, assets,
a member inflating to 1 GiB; slim indexes with negative or absurd dimensions and FIFO shards; caffemodels
with absurd lengths and deep nesting; prototxts with quadratic digit runs and deep braces; safetensors,
msgpack and torch files declaring huge sizes.

Each format's inputs run in one worker process (frameworks imported once) that reports the result of every
input; a worker silent for 60 s is killed, its input counted as a hang, and a new worker goes on with the
rest. Peak memory is each worker's peak RSS (VmHWM), an upper bound of every input it ran. Writes outside
the destination: each input's folder (but its out/) and a private TMPDIR are compared before and after.

    python benchmarks/hostile_corpus.py              # the whole corpus (~460 inputs, 10-20 minutes on 2 cores)
    python benchmarks/hostile_corpus.py --quick      # the numpy and torch readers only (~60 inputs; a CI test)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HANG_S = 30.0
WATCHDOG_S = 60.0

# (reader id, format, file name, save options)
READERS = [
    ("canonical", "canonical", "w.safetensors", {}),
    ("torch", "torch", "w.pt", {}),
    ("torchvision", "torchvision", "w.pth", {}),
    ("caffe", "caffe", "w.caffemodel", {"container": "layer"}),
    ("caffe-v1", "caffe", "w.caffemodel", {"container": "layers"}),
    ("keras-h5", "keras", "w.weights.h5", {}),
    ("keras", "keras", "w.keras", {}),
    ("msgpack", "flax", "w.msgpack", {}),
    ("orbax", "flax", "w.orbax", {}),
    ("slim", "slim", "w.ckpt", {}),
    ("onnx", "onnx", "w.onnx", {}),
    ("onnx-external", "onnx", "w.onnx", {"external_data": True}),
]
QUICK = ("canonical", "torch", "caffe")


def _spec(reader):
    from alexnet_parity.common import get_spec

    if reader == "slim":
        return get_spec("slim-v2", input_size=67, include_top=False)
    return get_spec("torchvision", input_size=64, include_top=False)


def _files_of(path):
    if os.path.isdir(path):
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    parent, base = os.path.split(path)
    return sorted(os.path.join(parent, f) for f in os.listdir(parent) if f == base or f.startswith(base + "."))


# --- making the corpus ----------------------------------------------------------------------------------------

def make_originals(root, only=None):
    import numpy as np

    from alexnet_parity import weights_convert as wc

    made = {}
    for reader, fmt, name, options in READERS:
        if only is not None and reader not in only:
            continue
        folder = os.path.join(root, "orig", reader)
        os.makedirs(folder)
        spec = _spec(reader)
        rng = np.random.default_rng(0)
        w = {k: rng.standard_normal(s, dtype=np.float32) for k, s in spec.weight_shapes().items()}
        wc.save(os.path.join(folder, name), spec, w, fmt=fmt, **options)
        made[reader] = os.path.join(folder, name)
    return made


def _copy(original, case_dir):
    os.makedirs(case_dir)
    dst = os.path.join(case_dir, os.path.basename(original))
    if os.path.isdir(original):
        shutil.copytree(original, dst)
    else:
        for f in _files_of(original):
            shutil.copy(f, os.path.join(case_dir, os.path.basename(f)))
    return dst


def _mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["truncate", "flip", "flip", "flip", "zero", "garbage"])
    n = len(data)
    if kind == "truncate":
        return data[:rng.choice([0, 1, 8, 64, rng.randrange(max(n, 1))])]
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))
    out = bytearray(data)
    if kind == "zero":
        start = rng.randrange(max(n, 1))
        out[start:start + rng.randrange(1, 4096)] = bytes(min(4096, n - start))
        return bytes(out)[:n]
    for _ in range(rng.randrange(1, 7)):
        window = min(n, 65536)
        i = rng.choice([rng.randrange(window), n - 1 - rng.randrange(window), rng.randrange(n)])
        out[i] ^= rng.randrange(1, 256)
        if rng.random() < 0.3:  # a plausible huge length or dimension
            out[i:i + 8] = struct.pack("<Q", rng.choice([2 ** 31, 2 ** 40, 2 ** 63 - 1, 2 ** 64 - 1]))[:len(out) - i]
    return bytes(out)


def mutation_cases(originals, root, per_reader, seed=0):
    cases = []
    for reader, fmt, _, _ in READERS:
        if reader not in originals:
            continue
        for i in range(per_reader):
            rng = random.Random(f"{seed}-{reader}-{i}")
            case_dir = os.path.join(root, "cases", f"{reader}-mut{i}")
            src = _copy(originals[reader], case_dir)
            target = rng.choice(_files_of(src))
            with open(target, "rb") as fh:
                data = fh.read()
            with open(target, "wb") as fh:
                fh.write(_mutate(data, rng))
            cases.append({"id": f"{reader}-mut{i}", "fmt": fmt, "src": src, "dir": case_dir})
    return cases


def _generic_cases(originals, root):
    """The source itself is hostile: a FIFO, a device, a directory, a link loop, empty, a link outside."""
    cases = []
    for reader, fmt, name, _ in READERS:
        if reader not in originals or reader == "slim":
            continue
        for kind in ("fifo", "devzero", "devnull", "dir", "loop", "empty", "devurandom"):
            case_dir = os.path.join(root, "cases", f"{reader}-{kind}")
            os.makedirs(case_dir)
            src = os.path.join(case_dir, name)
            if kind == "fifo":
                os.mkfifo(src)
            elif kind.startswith("dev"):
                os.symlink({"devzero": "/dev/zero", "devnull": "/dev/null", "devurandom": "/dev/urandom"}[kind], src)
            elif kind == "dir":
                os.makedirs(os.path.join(src, "sub"))
            elif kind == "loop":
                os.symlink(src, src)
            else:
                open(src, "wb").close()
            cases.append({"id": f"{reader}-{kind}", "fmt": fmt, "src": src, "dir": case_dir})
    return cases


def _case(root, cid, fmt, original, edit, **extra):
    case_dir = os.path.join(root, "cases", cid)
    src = _copy(original, case_dir)
    edit(src, case_dir)
    return {"id": cid, "fmt": fmt, "src": src, "dir": case_dir, **extra}


def _orbax_cases(original, root):
    def replace_with(target_kind):
        def edit(src, case_dir):
            meta = os.path.join(src, "_CHECKPOINT_METADATA")
            os.remove(meta)
            if target_kind == "fifo":
                os.mkfifo(meta)
            elif target_kind == "outside":
                with open(os.path.join(case_dir, "secret.json"), "w") as fh:
                    fh.write("{}")
                os.symlink(os.path.join(case_dir, "secret.json"), meta)
            elif target_kind == "dirloop":
                os.symlink(src, meta)
            else:
                os.symlink(target_kind, meta)
        return edit

    def deep(src, case_dir):
        path = src
        for _ in range(40):
            path = os.path.join(path, "d")
        os.makedirs(path)

    def wide(src, case_dir):
        for i in range(12000):
            open(os.path.join(src, f"f{i}"), "wb").close()

    def forged(src, case_dir):
        for name in ("_METADATA", "_CHECKPOINT_METADATA"):
            path = os.path.join(src, name)
            text = open(path).read()
            text = text.replace("[64, 3, 11, 11]", "[640000, 3, 11, 11]").replace("[11, 11, 3, 64]", "[11, 11, 3, 640000]")
            with open(path, "w") as fh:
                fh.write(text)

    def shard_fifo(src, case_dir):
        shard = next(f for f in _files_of(src) if "/d/" in f)
        os.remove(shard)
        os.mkfifo(shard)

    def meta_huge(src, case_dir):
        with open(os.path.join(src, "_METADATA"), "w") as fh:
            fh.write("[" * 100000 + "]" * 100000)

    edits = {"meta-fifo": replace_with("fifo"), "meta-devzero": replace_with("/dev/zero"),
             "meta-outside": replace_with("outside"), "meta-dirloop": replace_with("dirloop"),
             "meta-devurandom": replace_with("/dev/urandom"), "deep": deep, "wide": wide, "forged": forged,
             "shard-fifo": shard_fifo, "meta-nesting": meta_huge}
    return [_case(root, f"orbax-{k}", "flax", original, e) for k, e in edits.items()]


def _h5_cases(original, root):
    import h5py

    def link(target):
        def edit(src, case_dir):
            if target == "fifo":
                os.mkfifo(os.path.join(case_dir, "pipe"))
            with h5py.File(src, "r+") as f:
                first = next(iter(f["layers"].values()))
                del first["vars"]
                first["vars"] = h5py.ExternalLink(os.path.join(case_dir, "pipe") if target == "fifo" else target, "/")
        return edit

    def softloop(src, case_dir):
        with h5py.File(src, "r+") as f:
            f["layers/loop"] = h5py.SoftLink("/layers/loop")

    def dataset(shape, compression=None, external=None):
        def edit(src, case_dir):
            with h5py.File(src, "r+") as f:
                vars_ = next(g["vars"] for g in f["layers"].values()
                             if isinstance(g, h5py.Group) and g["vars"].attrs.get("name") in ("conv1", b"conv1"))
                del vars_["1"]
                kw = {}
                if compression:
                    kw = {"compression": "gzip", "chunks": (min(shape[0], 1 << 20),)}
                if external:
                    kw = {"external": [(external, 0, h5py.h5f.UNLIMITED)]}
                ds = vars_.create_dataset("1", shape=shape, dtype="f4", **kw)
                if compression:
                    ds[:min(shape[0], 1 << 20)] = 0
        return edit

    def wide(src, case_dir):
        with h5py.File(src, "r+") as f:
            g = f.create_group("junk")
            for i in range(3000):
                g.create_group(str(i))

    def deep(src, case_dir):
        with h5py.File(src, "r+") as f:
            f.create_group("/".join(["n"] * 200))

    edits = {"extlink-fifo": link("fifo"), "extlink-devzero": link("/dev/zero"), "softloop": softloop,
             "gzip-bomb": dataset((1 << 28,), compression=True), "unwritten-huge": dataset((1 << 40,)),
             "external-devzero": dataset((1 << 28,), external="/dev/zero"), "wide": wide, "deep": deep}
    return [_case(root, f"h5-{k}", "keras", original, e) for k, e in edits.items()]


def _keras_cases(original, root):
    def rezip(config_edit=None, extra=None, weights=None):
        def edit(src, case_dir):
            with zipfile.ZipFile(src) as zin:
                members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
            os.remove(src)
            with zipfile.ZipFile(src, "w") as zout:
                for name, data in members.items():
                    if name == "config.json" and config_edit:
                        config = json.loads(data)
                        config_edit(config)
                        data = json.dumps(config).replace('"__DEEP__"', "[" * 5000 + "]" * 5000).encode()
                    if name == "model.weights.h5" and weights is not None:
                        zout.writestr(name, weights, compress_type=zipfile.ZIP_DEFLATED)
                        continue
                    zout.writestr(name, data)
                for name, data in (extra or {}).items():
                    zout.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        return edit

    def classes(n):
        return lambda c: c["config"].update(num_classes=n, include_top=True)

    def minimal_200k(src, case_dir):  # the 721-byte file: a config and nothing else worth a byte
        os.remove(src)
        config = {"module": "alexnet_parity.tf_impl.model", "class_name": "AlexNet",
                  "registered_name": "alexnet_parity>AlexNet",
                  "config": {"name": "a", "trainable": True, "variant": "torchvision", "input_size": 224,
                             "num_classes": 200000, "include_top": True}}
        with zipfile.ZipFile(src, "w") as zout:
            zout.writestr("config.json", json.dumps(config))
            zout.writestr("metadata.json", "{}")
            zout.writestr("model.weights.h5", b"")

    edits = {
        "classes-200000": rezip(classes(200000)), "classes-negative": rezip(classes(-5)),
        "classes-string": rezip(classes("1000")), "classes-float": rezip(classes(1e12)),
        "minimal-200000": minimal_200k,
        "other-class": rezip(lambda c: c.update(class_name="Dense", registered_name=None,
                                                module="keras.layers", config={"units": 10 ** 9})),
        "functional": rezip(lambda c: c.update(class_name="Functional", registered_name="Functional")),
        "deep-config": rezip(lambda c: c["config"].update(x="__DEEP__")),
        "assets": rezip(extra={"assets/x.bin": bytes(1 << 20)}),
        "bomb-1gib": rezip(weights=bytes(1 << 30)),
        "bomb-assets": rezip(extra={"assets/zeros": bytes(1 << 30)}),
        "variant-unknown": rezip(lambda c: c["config"].update(variant="nope")),
        "input-huge": rezip(lambda c: c["config"].update(input_size=10 ** 6)),
    }
    return [_case(root, f"keras-{k}", "keras", original, e) for k, e in edits.items()]


def _slim_cases(original, root):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from alexnet_parity.weights_convert import protowire as pw
    from test_convert_hostile import _index_entries, _write_table

    def shape_edit(dims, name=b"alexnet_v2/conv1/biases"):
        def edit(src, case_dir):
            entries = _index_entries(src + ".index")
            rebuilt = b""
            for n, w, v in pw.parse(dict(entries)[name], "x"):
                if n == 2:
                    body = b"".join(pw.key(2, pw.LEN) + pw.varint(len(d)) + d
                                    for d in (pw.key(1, pw.VARINT) + pw.varint(x) for x in dims))
                    rebuilt += pw.key(2, pw.LEN) + pw.varint(len(body)) + body
                elif w == pw.VARINT:
                    rebuilt += pw.key(n, w) + pw.varint(v)
                else:
                    rebuilt += pw.key(n, w) + (pw.varint(len(v)) if w == pw.LEN else b"") + bytes(v)
            with open(src + ".index", "wb") as fh:
                fh.write(_write_table([(k, rebuilt if k == name else v) for k, v in entries]))
        return edit

    def shard(kind):
        def edit(src, case_dir):
            path = src + ".data-00000-of-00001"
            os.remove(path)
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "outside":
                os.symlink("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd", path)
            else:
                os.symlink(kind, path)
        return edit

    def shards(n):
        def edit(src, case_dir):
            entries = _index_entries(src + ".index")
            header = pw.key(1, pw.VARINT) + pw.varint(n)
            with open(src + ".index", "wb") as fh:
                fh.write(_write_table([(b"", header)] + [e for e in entries if e[0] != b""]))
        return edit

    edits = {"negative-dim": shape_edit([-64]), "huge-dims": shape_edit([2 ** 40, 2 ** 40]),
             "many-dims": shape_edit([1] * 5000), "zero-dim": shape_edit([0]), "shard-fifo": shard("fifo"),
             "shard-devzero": shard("/dev/zero"), "shard-outside": shard("outside"), "shards-1e6": shards(10 ** 6),
             "shards-2": shards(2), "wrong-count": shape_edit([65])}
    return [_case(root, f"slim-{k}", "slim", original, e) for k, e in edits.items()]


def _wire_cases(originals, root):
    """caffemodel, prototxt, safetensors, msgpack and torch files declaring absurd sizes or nesting."""
    from alexnet_parity.weights_convert import protowire as pw

    cases = []

    def write_case(cid, fmt, name, data, **extra):
        case_dir = os.path.join(root, "cases", cid)
        os.makedirs(case_dir)
        src = os.path.join(case_dir, name)
        with open(src, "wb") as fh:
            fh.write(data)
        for other, text in extra.pop("siblings", {}).items():
            with open(os.path.join(case_dir, other), "wb") as fh:
                fh.write(text)
        cases.append({"id": cid, "fmt": fmt, "src": src, "dir": case_dir, **extra})
        return case_dir

    nested = b""
    for _ in range(20000):
        nested = pw.key(100, pw.LEN) + pw.varint(len(nested)) + nested
    write_case("caffe-deep", "caffe", "w.caffemodel", nested[:900_000])
    write_case("caffe-huge-len", "caffe", "w.caffemodel", pw.key(100, pw.LEN) + pw.varint(2 ** 62) + b"x" * 10)
    blob = pw.field_message(7, pw.field_packed_varints(1, [2 ** 40, 2 ** 40])) + pw.field_packed_array(5, [0.0] * 4)
    layer = (pw.field_str(1, "conv1") + pw.field_str(2, "Convolution") + pw.field_message(7, blob))
    write_case("caffe-huge-shape", "caffe", "w.caffemodel", bytes(b"".join(bytes(c) for c in pw.field_message(100, layer))))
    runs = pw.key(5, pw.I32) * 1
    write_case("caffe-unpacked-run", "caffe", "w.caffemodel",
               b"".join(bytes(c) for c in pw.field_message(100, pw.field_str(1, "conv1") + [
                   pw.key(7, pw.LEN) + pw.varint(5 * 150000) + (runs + b"\0\0\0\0") * 150000])))
    if "caffe" in originals:
        for cid, text in (("digits", "name: " + "9" * 300_000 + "x\n"), ("braces", "layer {" * 200_000),
                          ("string", 'name: "' + "\\\\" * 300_000), ("exponent", "a: 1" + "e" * 300_000),
                          ("floats", "a: " + "1." * 300_000)):
            case_dir = write_case(f"prototxt-{cid}", "caffe", "w.caffemodel", open(originals["caffe"], "rb").read(),
                                  siblings={"deploy.prototxt": text.encode()})
            cases[-1]["prototxt"] = os.path.join(case_dir, "deploy.prototxt")
        for cid, kind in (("fifo", "fifo"), ("devzero", "/dev/zero")):
            case_dir = write_case(f"prototxt-{cid}", "caffe", "w.caffemodel", open(originals["caffe"], "rb").read())
            path = os.path.join(case_dir, "deploy.prototxt")
            os.mkfifo(path) if kind == "fifo" else os.symlink(kind, path)
            cases[-1]["prototxt"] = path
    header = json.dumps({"a": {"dtype": "F32", "shape": [2 ** 31, 2 ** 31], "data_offsets": [0, 2 ** 63]}}).encode()
    write_case("safetensors-huge", "canonical", "w.safetensors", struct.pack("<Q", len(header)) + header)
    write_case("safetensors-header-len", "canonical", "w.safetensors", struct.pack("<Q", 2 ** 62) + b"{}")
    deep = ("[" * 100000 + "]" * 100000).encode()
    write_case("safetensors-deep", "canonical", "w.safetensors", struct.pack("<Q", len(deep)) + deep)
    write_case("msgpack-array32", "flax", "w.msgpack", b"\xdd\xff\xff\xff\xff")
    write_case("msgpack-map32", "flax", "w.msgpack", b"\xdf\xff\xff\xff\xff")
    write_case("msgpack-bin32", "flax", "w.msgpack", b"\x81\xa1a\xc6\xff\xff\xff\xff")
    write_case("msgpack-deep", "flax", "w.msgpack", b"\x91" * 500_000)
    write_case("msgpack-ext", "flax", "w.msgpack",
               b"\x81\xa5conv1\x81\xa4bias\xc7\x20\x01" + b"\x93\x91\xce\xff\xff\xff\xff\xa3<f4\xc4\x00" + b"\0" * 14)
    import io
    import pickle

    def torch_zip(cid, pickled, records=None):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", pickled)
            z.writestr("archive/version", "3\n")
            z.writestr("archive/byteorder", "little")
            for name, data in (records or {}).items():
                z.writestr(name, data)
        write_case(cid, "torch", "w.pt", buf.getvalue())

    torch_zip("torch-deep-pickle", b"\x80\x02" + b"]" * 200_000 + b"." )
    torch_zip("torch-deep-list", b"\x80\x02" + b"(" * 100_000 + b"l" * 100_000 + b".")
    torch_zip("torch-huge-record", pickle.dumps({"a": 1}), {"archive/data/0": b""})
    torch_zip("torch-not-pickle", b"garbage")
    torch_zip("torch-bomb", pickle.dumps({}), {"archive/data/0": bytes(1 << 30)})
    return cases


def _onnx_cases(original, root):
    """External data that leaves the model's folder (../, an absolute path, a link out, a FIFO), or whose
    offset and length do not fit the file: the path-traversal class of ONNX's own advisories."""
    import onnx

    def relocate(location=None, offset=None, length=None, make=None):
        def edit(src, case_dir):
            if make is not None:
                make(src, case_dir)
            model = onnx.load(src, load_external_data=False)
            for tensor in model.graph.initializer:
                for entry in tensor.external_data:
                    if entry.key == "location" and location is not None:
                        entry.value = location(case_dir) if callable(location) else location
                    elif entry.key == "offset" and offset is not None:
                        entry.value = offset
                    elif entry.key == "length" and length is not None:
                        entry.value = length
            with open(src, "wb") as fh:
                fh.write(model.SerializeToString())
        return edit

    def secret_beside(src, case_dir):
        with open(os.path.join(os.path.dirname(case_dir), "secret.data"), "wb") as fh:
            fh.write(b"\0" * (1 << 20))

    def link_out(src, case_dir):
        secret_beside(src, case_dir)
        os.remove(src + ".data")
        os.symlink(os.path.join(os.path.dirname(case_dir), "secret.data"), src + ".data")

    def data_fifo(src, case_dir):
        os.remove(src + ".data")
        os.mkfifo(src + ".data")

    edits = {"up": relocate("../secret.data", make=secret_beside), "absolute": relocate("/etc/hostname"),
             "abs-devzero": relocate("/dev/zero"), "link-out": relocate(make=link_out),
             "data-fifo": relocate(make=data_fifo), "offset-huge": relocate(offset=str(1 << 62)),
             "length-huge": relocate(length=str(1 << 40)), "offset-negative": relocate(offset="-4096"),
             "length-text": relocate(length="lots"), "dir-as-data": relocate(location=".")}
    return [_case(root, f"onnx-external-{k}", "onnx", original, e) for k, e in edits.items()]


def build_corpus(root, per_reader, quick):
    originals = make_originals(root, QUICK if quick else None)
    cases = _generic_cases(originals, root) + _wire_cases(originals, root)
    cases += mutation_cases(originals, root, 6 if quick else per_reader)
    if not quick:
        cases += _orbax_cases(originals["orbax"], root) + _h5_cases(originals["keras-h5"], root)
        cases += _keras_cases(originals["keras"], root) + _slim_cases(originals["slim"], root)
        cases += _onnx_cases(originals["onnx-external"], root)
    else:
        cases = [c for c in cases if c["fmt"] in ("canonical", "torch", "caffe")]
    return cases


# --- running it -----------------------------------------------------------------------------------------------

def _snapshot(folder, skip):
    found = {}
    for d, dirs, files in os.walk(folder):
        dirs[:] = [x for x in dirs if os.path.join(d, x) != skip]
        for f in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, f)
            st = os.lstat(p)
            found[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def worker(cases_file):
    """Run each case's conversion in this process; one JSON line per case on stdout."""
    import contextlib
    import io
    import signal

    from alexnet_parity.alexnet_cli.main import main

    with open(cases_file) as fh:
        cases = json.load(fh)
    tmpdir = os.environ["TMPDIR"]

    def stuck(*_):
        raise TimeoutError("hung")

    signal.signal(signal.SIGALRM, stuck)
    for case in cases:
        print(json.dumps({"start": case["id"]}), flush=True)
        out = os.path.join(case["dir"], "out")
        os.makedirs(out, exist_ok=True)
        before = _snapshot(case["dir"], out)
        argv = ["convert", case["src"], os.path.join(out, "x.safetensors"), "--from", case["fmt"], "-q"]
        if case.get("prototxt"):
            argv += ["--prototxt", case["prototxt"]]
        err, traceback_seen, code = io.StringIO(), None, None
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, HANG_S)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except TimeoutError:
            code = "hang"
        except BaseException as exc:  # noqa: BLE001 -- the point: anything escaping main() is a traceback
            traceback_seen = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.monotonic() - start
        text = err.getvalue()
        if traceback_seen is None and "Traceback (most recent call last)" in text:
            traceback_seen = text[text.index("Traceback"):][:600]
        after = _snapshot(case["dir"], out)
        outside = sorted(set(after.items()) ^ set(before.items()))
        leftovers = sorted(set(os.listdir(out)) - ({"x.safetensors"} if code == 0 else set()))
        if os.listdir(tmpdir):
            outside.append(("TMPDIR", sorted(os.listdir(tmpdir))))
            for name in os.listdir(tmpdir):
                shutil.rmtree(os.path.join(tmpdir, name), ignore_errors=True)
        errors = [line for line in text.splitlines() if line.startswith("alexnet convert: error:")]
        print(json.dumps({"id": case["id"], "fmt": case["fmt"], "code": code, "traceback": traceback_seen,
                          "elapsed": round(elapsed, 3), "outside": [str(x) for x in outside] + leftovers,
                          "size": sum(os.path.getsize(f) for f in _files_of(case["src"]) if os.path.isfile(f))
                          if os.path.isfile(case["src"]) or os.path.isdir(case["src"]) else 0,
                          "error": errors[0][:200] if errors else "",
                          "maxrss_mb": _peak_mb()}), flush=True)


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM, which exec resets; ru_maxrss keeps the parent's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cases(cases, root):
    """Workers per format; a worker silent for WATCHDOG_S is killed, its case counted as a hang."""
    results = []
    tmpdir = os.path.join(root, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    by_fmt = {}
    for case in cases:
        by_fmt.setdefault(case["fmt"], []).append(case)
    env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": tmpdir, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONDONTWRITEBYTECODE": "1"}
    for fmt, todo in by_fmt.items():
        while todo:
            cases_file = os.path.join(root, f"cases-{fmt}.json")
            with open(cases_file, "w") as fh:
                json.dump(todo, fh)
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", cases_file],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                    cwd=root)
            current, done = None, set()
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], WATCHDOG_S)
                if not ready:  # stuck beyond the in-process alarm: in C code that ignores signals
                    proc.kill()
                    proc.wait()
                    if current is not None:
                        results.append({"id": current, "fmt": fmt, "code": "hang", "traceback": None,
                                        "elapsed": WATCHDOG_S, "outside": [], "size": 0, "error": "",
                                        "maxrss_mb": 0})
                        done.add(current)
                    break
                line = proc.stdout.readline()
                if not line:
                    proc.wait()
                    if current is not None and current not in done:  # the worker died on this case
                        results.append({"id": current, "fmt": fmt, "code": f"died {proc.returncode}",
                                        "traceback": f"worker exited {proc.returncode}", "elapsed": 0,
                                        "outside": [], "size": 0, "error": "", "maxrss_mb": 0})
                        done.add(current)
                    break
                record = json.loads(line)
                if "start" in record:
                    current = record["start"]
                else:
                    results.append(record)
                    done.add(record["id"])
                    current = None
            todo = [c for c in todo if c["id"] not in done]
    return results


def summarize(results) -> dict:
    tracebacks = [r for r in results if r["traceback"]]
    hangs = [r for r in results if r["code"] == "hang" or r["elapsed"] > HANG_S]
    outside = [r for r in results if r["outside"]]
    small = [r for r in results if r["size"] < 1 << 20]
    return {"inputs": len(results), "tracebacks": len(tracebacks), "hangs_over_30s": len(hangs),
            "wrote_outside_destination": len(outside),
            "refused_with_one_line": sum(1 for r in results if r["code"] == 2 and r["error"]),
            "converted": sum(1 for r in results if r["code"] == 0),
            "inputs_under_1mb": len(small),
            "peak_rss_mb_any_worker": round(max((r["maxrss_mb"] for r in results), default=0)),
            "slowest_s": max((r["elapsed"] for r in results), default=0),
            "slowest": max(results, key=lambda r: r["elapsed"])["id"] if results else None,
            "examples": {"traceback": [(r["id"], r["traceback"][:200]) for r in tracebacks[:5]],
                         "hang": [r["id"] for r in hangs[:5]], "outside": [(r["id"], r["outside"][:3]) for r in outside[:5]]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="the numpy and torch readers only (a CI test)")
    p.add_argument("--per-reader", type=int, default=32, help="random mutations per reader (default 32)")
    p.add_argument("--keep", help="build the corpus in this folder and keep it")
    p.add_argument("--json", help="write every input's result to this file")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    sys.path.insert(0, ROOT)
    root = args.keep or tempfile.mkdtemp(prefix="hostile-corpus-")
    os.makedirs(root, exist_ok=True)
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        cases = build_corpus(root, args.per_reader, args.quick)
        start = time.monotonic()
        results = run_cases(cases, root)
        summary = summarize(results)
        summary["wall_s"] = round(time.monotonic() - start)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)
        print(json.dumps(summary, indent=1))
        bad = summary["tracebacks"] or summary["hangs_over_30s"] or summary["wrote_outside_destination"] or (
            summary["peak_rss_mb_any_worker"] > 2500)
        return 1 if bad else 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
