"""A new format is one module plus its registration line; a new variant is one entry in common/variants.py.
Each test adds one in a fixture and finds it everywhere that lists formats or variants, untouched."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import struct

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import VARIANTS, Case, get_spec, smallest_input_size
from alexnet_parity.common.engines import compared
from alexnet_parity.parity_tests import core
from alexnet_parity.weights_convert._common import atomic_output, finish, resolve_spec, starts_with
from alexnet_parity.weights_convert.registry import Format

# --- a toy format: what a format module holds ------------------------------------------------------------
# file: MAGIC, a little-endian u32 header length, a JSON header {name: shape} in order, then float32 data

TOY_MAGIC = b"TOYW\x00\x01"


def _toy_load(path, variant=None, input_size=None):
    with open(path, "rb") as fh:
        data = fh.read()
    if not data.startswith(TOY_MAGIC):
        raise ValueError(f"{path}: not a toy file")
    (size,) = struct.unpack_from("<I", data, len(TOY_MAGIC))
    start = len(TOY_MAGIC) + 4
    header = json.loads(data[start:start + size])
    offset, weights = start + size, {}
    for name, shape in header.items():
        count = int(np.prod(shape))
        weights[name] = np.frombuffer(data, np.float32, count, offset).reshape(shape).copy()
        offset += 4 * count
    spec = resolve_spec({k: v.shape for k, v in weights.items()}, path, variant=variant, input_size=input_size)
    return finish(spec, weights, path)


def _toy_save(path, spec, weights):
    header = json.dumps({k: list(weights[k].shape) for k in spec.weight_shapes()}).encode()
    with atomic_output(path, replaces=_toy_sniff, what="a toy file") as tmp, open(tmp, "wb") as fh:
        fh.write(TOY_MAGIC + struct.pack("<I", len(header)) + header)
        for name in spec.weight_shapes():
            fh.write(np.ascontiguousarray(weights[name], dtype="<f4").tobytes())


def _toy_sniff(path):
    return starts_with(path, TOY_MAGIC)


TOY = Format("toy", _toy_load, _toy_save, lambda path: path.endswith(".toyw"), _toy_sniff, frameworks=(),
             holds="all", files=".toyw (a test's own format)")


@pytest.fixture
def toy_format():
    wc.register(TOY)  # the one registration line a new format adds
    try:
        yield TOY
    finally:
        wc.FORMATS.pop("toy", None)


def test_a_registered_format_is_in_help_guess_and_convert(toy_format, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["convert", "--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "toy" in help_text and ".toyw (a test's own format)" in help_text

    assert wc.guess_format("w.toyw") == "toy" and wc.guess_format("w.toyw", reading=False) == "toy"
    assert wc.get_format("toy") is TOY and "toy" in str(pytest.raises(ValueError, wc.get_format, "nope").value)

    spec = get_spec("torchvision", input_size=64, include_top=False)
    rng = np.random.default_rng(0)
    w = {k: rng.standard_normal(s, dtype=np.float32) for k, s in spec.weight_shapes().items()}
    src, mid, back = tmp_path / "a.safetensors", tmp_path / "b.toyw", tmp_path / "c.safetensors"
    wc.save(str(src), spec, w)
    assert main(["convert", str(src), str(mid), "-q"]) == 0
    assert mid.read_bytes().startswith(TOY_MAGIC)
    assert main(["convert", str(mid), str(back), "--input-size", "64", "-q"]) == 0
    assert "from toy" in capsys.readouterr().out
    spec2, w2 = wc.load(str(back))
    assert spec2 == spec and all(np.array_equal(w2[k], w[k]) and w2[k].dtype == np.float32 for k in w)

    # an existing file with no telling name is known by its content
    os.link(mid, tmp_path / "weights.bin")
    assert wc.guess_format(str(tmp_path / "weights.bin")) == "toy"
    with pytest.raises(ValueError, match=r"weights\.bin: cannot tell the format from the name; pass --to"):
        wc.guess_format(str(tmp_path / "weights.bin"), reading=False)  # what to write is told by the name only


def test_guess_by_content_and_name(tmp_path):
    """torch's sniffer takes any zip and keras's a zip named .keras: the name decides between them; a file
    with no telling name goes by its content; a damaged file by its name, whatever its first byte fits."""
    for name in ("w.keras", "w.pth", "w.bin"):
        (tmp_path / name).write_bytes(b"PK\x03\x04" + bytes(60))
    assert wc.guess_format(str(tmp_path / "w.keras")) == "keras"
    assert wc.guess_format(str(tmp_path / "w.pth")) == "torch"
    assert wc.guess_format(str(tmp_path / "w.bin")) == "torch"
    spec = get_spec("torchvision", input_size=64, include_top=False)
    w = {k: np.zeros(s, np.float32) for k, s in spec.weight_shapes().items()}
    wc.save(str(tmp_path / "c.safetensors"), spec, w)
    os.link(tmp_path / "c.safetensors", tmp_path / "c.bin")
    assert wc.guess_format(str(tmp_path / "c.bin")) == "canonical"
    (tmp_path / "bad.caffemodel").write_bytes(bytes([0x85]) + bytes(20))  # a msgpack map's first byte
    assert wc.guess_format(str(tmp_path / "bad.caffemodel")) == "caffe"


# --- a seventh variant ----------------------------------------------------------------------------------

def _half_width(layer):
    if layer.kind == "conv":
        return dataclasses.replace(layer, out_channels=layer.out_channels // 2)
    if layer.kind == "dense" and layer.name != "fc8":
        return dataclasses.replace(layer, out_features=512)
    return layer


@pytest.fixture
def seventh_variant(monkeypatch):
    """caffe at half the channels (48-128-192-192-128, fc 512): the one entry a new variant is."""
    base = VARIANTS["caffe"]
    variant = dataclasses.replace(base, name="caffe-half", title="caffe at half width",
                                  layers=tuple(map(_half_width, base.layers)),
                                  cases=(Case("ceil pooling at 71: pool5 2x2", input_size=71),))
    monkeypatch.setitem(VARIANTS, "caffe-half", variant)
    yield "caffe-half"
    get_spec.cache_clear()
    smallest_input_size.cache_clear()


def test_a_new_variant_is_in_summary_suite_and_converters(seventh_variant, tmp_path, capsys):
    name = seventh_variant
    # counted by hand: conv (out * in/groups * k*k + out), dense (out * in + out), pool5 6x6 at 227
    params = sum((48 * 3 * 121 + 48, 128 * 24 * 25 + 128, 192 * 128 * 9 + 192, 192 * 96 * 9 + 192,
                  128 * 96 * 9 + 128, 512 * 128 * 36 + 512, 512 * 512 + 512, 1000 * 512 + 1000))
    assert main(["summary", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == params
    assert main(["summary", name]) == 0 and "caffe at half width" in capsys.readouterr().out

    configs = core.configs()
    assert (name, {}) in configs and (name, {"input_size": 71}) in configs
    assert core.config_id(name, {"input_size": 71}) == "caffe-half@71"
    assert len(configs) == len(core.CONFIGS) + 2  # CONFIGS was computed without it

    fw = next((name for name, engine in compared().items() if engine.available()), None)
    if fw is not None:
        result = core.run_parity(name, {"input_size": 71}, frameworks=(fw,))
        assert list(result.vs_reference) == [fw] and result.layers[-1] == "fc8"
        assert not core.failures(result), core.failures(result)

    spec = get_spec(name)
    assert spec.param_count() == params
    rng = np.random.default_rng(1)
    w = {k: rng.standard_normal(s, dtype=np.float32) for k, s in spec.weight_shapes().items()}
    containers = [("canonical", ".safetensors", ()), ("torch", ".pt", ("torch",)),
                  ("torchvision", ".pth", ("torch",)), ("caffe", ".caffemodel", ()),
                  ("keras", ".weights.h5", ("tensorflow",)), ("flax", ".msgpack", ("flax",))]
    for fmt, ending, needs in containers:
        if not all(importlib.util.find_spec(m) for m in needs):
            continue
        path = str(tmp_path / f"w{ending}")
        wc.save(path, spec, w, fmt=fmt)
        spec2, w2 = wc.load(path, fmt=fmt)  # the variant from the file or from its shapes alone
        assert spec2 == spec, (fmt, spec2.describe())
        assert all(np.array_equal(w2[k], w[k]) for k in w), fmt


def test_suite_configs_are_todays_thirteen():
    ids = [core.config_id(*c) for c in core.CONFIGS]
    assert sorted(ids) == sorted(["paper", "caffe", "caffenet", "single-column", "torchvision", "slim-v2",
                                  "paper@227", "caffe@256", "torchvision@256", "torchvision@320", "slim-v2@256",
                                  "single-column/10cls", "torchvision/notop"])
    assert ("torchvision", {"include_top": False}) in core.CONFIGS
