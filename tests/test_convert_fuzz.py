"""Property tests: random and mutated files (truncations, flipped bytes, garbage) fed to every reader.

None may crash with anything but a ValueError-family error (ValueError, FileNotFoundError) whose message
names the file; none may hang; a conversion that fails leaves its output directory empty. Each format is
fuzzed from a real headless file (2.3 M parameters) so mutations reach every level of the format; flips are
drawn near the start and the end more often, where the headers and indexes live. Example counts are small
(the whole convert suite stays within its time budget); the mutations, not the count, do the work.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec
from alexnet_parity.weights_convert import protowire, prototxt

from _convert_util import bvlc_deploy_prototxt, frameworks_present, no_hang

SPEC = get_spec("paper", include_top=False)
ERRORS = (ValueError, FileNotFoundError)
HANG = 60.0  # seconds: a reader that takes longer on a 9 MB file is stuck
# (format, file name, save options, examples)
READERS = [
    ("canonical", "w.safetensors", {}, 25),
    ("torch", "w.pt", {}, 25),
    ("torchvision", "w.pth", {}, 10),
    ("caffe", "w.caffemodel", {"container": "layer"}, 30),
    ("caffe", "w.v1.caffemodel", {"container": "layers"}, 30),
    ("keras", "w.weights.h5", {}, 10),
    ("keras", "w.keras", {}, 6),
    ("flax", "w.msgpack", {}, 15),
    ("flax", "w.orbax", {}, 6),
    ("slim", "w.ckpt", {}, 10),
]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One valid file (or directory) per reader, written once."""
    root = tmp_path_factory.mktemp("fuzz-originals")
    rng = np.random.default_rng(0)
    made = {}
    for fmt, name, options, _ in READERS:
        if not frameworks_present(fmt):
            continue
        spec = get_spec("slim-v2", include_top=False) if fmt == "slim" else SPEC
        w = {k: rng.standard_normal(s, dtype=np.float32) for k, s in spec.weight_shapes().items()}
        wc.save(str(root / name), spec, w, fmt=fmt, **options)
        made[name] = root / name
    return made


def _files(path):
    """The files a checkpoint consists of: itself, a directory's files, or a prefix's .index and .data."""
    if os.path.isdir(path):
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    if path.endswith(".ckpt"):
        parent = os.path.dirname(path)
        return sorted(os.path.join(parent, f) for f in os.listdir(parent) if f.startswith(os.path.basename(path)))
    return [path]


@st.composite
def mutations(draw):
    """A function bytes -> bytes: a truncation, a few flipped bytes, or garbage."""
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "garbage"]))
    if kind == "truncate":
        frac = draw(st.one_of(st.floats(0, 1), st.integers(0, 4096)))
        return lambda data: data[: int(frac * len(data)) if isinstance(frac, float) else min(frac, len(data) - 1)]
    if kind == "garbage":
        junk = draw(st.binary(max_size=512))
        return lambda data: junk
    spots = draw(st.lists(st.tuples(st.sampled_from(["head", "tail", "any"]), st.floats(0, 1),
                                    st.integers(1, 255)), min_size=1, max_size=6))

    def flip(data):
        out = bytearray(data)
        for where, frac, xor in spots:
            n = len(out)
            if n == 0:
                return bytes(out)
            window = min(n, 65536)
            i = {"head": int(frac * (window - 1)), "tail": n - 1 - int(frac * (window - 1)),
                 "any": int(frac * (n - 1))}[where]
            out[i] ^= xor
        return bytes(out)

    return flip




def _run_one(fmt, original, options, mutate, which):
    """Copy the original, mutate one of its files, then (1) load it and (2) convert it with the CLI."""
    work = tempfile.mkdtemp(prefix="fuzz-")
    try:
        src = os.path.join(work, os.path.basename(original))
        if os.path.isdir(original):
            shutil.copytree(original, src)
        else:
            for f in _files(str(original)):
                shutil.copy(f, os.path.join(work, os.path.basename(f)))
        files = _files(src)
        target = files[which % len(files)]
        with open(target, "rb") as fh:
            data = fh.read()
        with open(target, "wb") as fh:
            fh.write(mutate(data))
        try:
            spec, weights = wc.load(src, fmt=fmt, variant="slim-v2" if fmt == "slim" else "paper")
        except ERRORS as err:
            assert os.path.basename(src) in str(err) or os.path.basename(target) in str(err), str(err)
            assert "\n" not in str(err).strip(), str(err)
        else:  # a mutation that kept the file valid (a flipped float): still a checked, finite result
            spec.check_weights(weights)
        out = os.path.join(work, "out")
        os.mkdir(out)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(["convert", src, os.path.join(out, "x.caffemodel"), "--from", fmt, "-q",
                         "--variant", "slim-v2" if fmt == "slim" else "paper"])
        assert code in (0, 2), stderr.getvalue()
        assert sorted(os.listdir(out)) == (["x.caffemodel", "x.prototxt"] if code == 0 else []), \
            "partial output left behind"  # a caffemodel comes with its deploy net
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("fmt,name,options,examples", READERS, ids=[r[1] for r in READERS])
def test_mutated_files_fail_cleanly(originals, fmt, name, options, examples):
    if name not in originals:
        pytest.skip(f"{fmt} framework not installed")

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutate=mutations(), which=st.integers(0, 64))
    def check(mutate, which):
        with no_hang(HANG):
            _run_one(fmt, originals[name], options, mutate, which)

    check()


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=256))
def test_wire_reader_never_crashes(data):
    try:
        fields = protowire.parse(data, "x", runs={5: "<f4"})
    except ValueError as err:
        assert str(err).startswith("x:")
    else:
        assert all(isinstance(n, int) and n > 0 for n, _, _ in fields)


DEPLOY = bvlc_deploy_prototxt(get_spec("caffe"))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(cut=st.integers(0, len(DEPLOY)), junk=st.text(max_size=20), at=st.integers(0, len(DEPLOY)))
def test_prototxt_reader_never_crashes(cut, junk, at):
    from alexnet_parity.weights_convert.caffe import read_prototxt

    text = DEPLOY[:at] + junk + DEPLOY[at:cut] if at < cut else DEPLOY[:cut] + junk
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "deploy.prototxt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            prototxt.parse(text, path)
            read_prototxt(path)
        except ValueError as err:
            assert str(err).startswith(path), str(err)
