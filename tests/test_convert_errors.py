"""Bad input ends in one clear line naming the file and the tensor, exit status 2, and no output file."""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec

SPEC = get_spec("torchvision", include_top=False)


def _weights(spec=SPEC, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in spec.weight_shapes().items()}


def _convert(capsys, *argv) -> tuple[int, str]:
    code = main(["convert", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_failed(capsys, out_dir, *argv, match):
    before = sorted(os.listdir(out_dir))
    code, err = _convert(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith("[convert]")]
    assert len(lines) == 1, err
    assert lines[0].startswith("alexnet convert: error: ")
    assert re.search(match, lines[0]), lines[0]
    assert sorted(os.listdir(out_dir)) == before, "a failed conversion left files behind"
    return lines[0]


@pytest.fixture()
def pt_file(tmp_path):
    torch = pytest.importorskip("torch")

    def make(state, name="bad.pt"):
        path = tmp_path / name
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
        return path

    return make


def test_wrong_missing_and_misshapen_tensors(tmp_path, pt_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    w = _weights()
    renamed = {("conv9.weight" if k == "conv3.weight" else k): v for k, v in w.items()}
    _assert_failed(capsys, out, pt_file(renamed), out / "x.safetensors", "--variant", "torchvision",
                   match=r"bad\.pt.*'conv3\.weight'")
    _assert_failed(capsys, out, pt_file(renamed), out / "x.safetensors",
                   match=r"bad\.pt.*fit no AlexNet variant")
    missing = {k: v for k, v in w.items() if k != "conv5.bias"}
    _assert_failed(capsys, out, pt_file(missing), out / "x.safetensors", "--variant", "torchvision",
                   match=r"bad\.pt.*no tensor 'conv5\.bias'")
    misshapen = {**w, "conv2.weight": w["conv2.weight"][:, :32]}
    line = _assert_failed(capsys, out, pt_file(misshapen), out / "x.caffemodel",
                          match=r"bad\.pt.*'conv2\.weight' is \(192, 32, 5, 5\)")
    assert "torchvision has (192, 64, 5, 5)" in line


def test_nan_and_integer_tensors(tmp_path, pt_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    w = _weights()
    w["conv4.bias"][7] = np.nan
    _assert_failed(capsys, out, pt_file(w), out / "x.pth", match=r"bad\.pt.*'conv4\.bias'.*NaN")
    w = _weights()
    w["conv1.bias"] = np.arange(64)
    _assert_failed(capsys, out, pt_file(w), out / "x.pth", match=r"bad\.pt.*'conv1\.bias'.*int64")


def test_pickle_with_code_is_refused_and_not_run(tmp_path, capsys):
    pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": Evil()}, f)
    out = tmp_path / "out"
    out.mkdir()
    _assert_failed(capsys, out, path, out / "x.safetensors", match=r"evil\.pth.*refused to unpickle")
    assert not marker.exists()


def test_truncated_and_corrupt_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    spec, w = SPEC, _weights()
    for name in ("w.safetensors", "w.caffemodel", "w.v1.caffemodel"):
        good = tmp_path / name
        wc.save(str(good), spec, w, container="layers") if "v1" in name else wc.save(str(good), spec, w)
        data = good.read_bytes()
        bad = tmp_path / f"cut-{name}"
        bad.write_bytes(data[: len(data) // 2])
        _assert_failed(capsys, out, bad, out / "x.pth", match=re.escape(f"cut-{name}"))
        flipped = bytearray(data)
        flipped[1:9] = b"\xff" * 8
        bad = tmp_path / f"flip-{name}"
        bad.write_bytes(bytes(flipped))
        _assert_failed(capsys, out, bad, out / "x.pth", match=re.escape(f"flip-{name}"))


def test_unknown_format_and_variant(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    src = tmp_path / "w.safetensors"
    wc.save(str(src), SPEC, _weights())
    _assert_failed(capsys, out, src, out / "x.tflite", match=r"x\.tflite: cannot tell the format.*--to")
    _assert_failed(capsys, out, src, out / "x.pt", "--to", "tflite", match=r"unknown format 'tflite'")
    _assert_failed(capsys, out, src, out / "x.pt", "--variant", "vgg16", match=r"unknown variant 'vgg16'")
    _assert_failed(capsys, out, tmp_path / "missing.pt", out / "x.safetensors", match=r"missing\.pt: no such file")
    _assert_failed(capsys, out, src, tmp_path / "no" / "such" / "dir.pt", match=r"does not exist")
    _assert_failed(capsys, out, src, out / "x.ckpt", match=r"x\.ckpt: the slim format holds slim-v2 only, not torchvision")


def test_ambiguous_variant_says_which_fit(tmp_path, pt_file, capsys):
    spec = get_spec("caffe", include_top=False)
    path = pt_file(_weights(spec), "caffe.pt")
    out = tmp_path / "out"
    out.mkdir()
    _assert_failed(capsys, out, path, out / "x.keras",
                   match=r"caffe\.pt: the tensor shapes fit paper, caffe, caffenet.*pass --variant")
    assert _convert(capsys, path, out / "x.safetensors", "--variant", "caffenet")[0] == 0
    assert wc.load(str(out / "x.safetensors"))[0].variant == "caffenet"


def test_caffe_structure_errors(tmp_path):
    from alexnet_parity.weights_convert import protowire as pw

    w = _weights()
    path = tmp_path / "w.caffemodel"
    wc.save(str(path), SPEC, w)
    # an extra layer with blobs that AlexNet does not have
    extra = pw.field_message(100, pw.field_str(1, "conv1_bn") + pw.field_str(2, "BatchNorm")
                             + pw.field_message(7, pw.field_packed_array(5, np.ones(4, np.float32))))
    bad = tmp_path / "extra.caffemodel"
    bad.write_bytes(path.read_bytes() + b"".join(bytes(c) for c in extra))
    with pytest.raises(ValueError, match=r"extra\.caffemodel: layer 'conv1_bn' \(BatchNorm\) has blobs"):
        wc.load(str(bad))
    both = tmp_path / "both.caffemodel"
    v1 = tmp_path / "v1.caffemodel"
    wc.save(str(v1), SPEC, w, container="layers")
    both.write_bytes(path.read_bytes() + v1.read_bytes())
    with pytest.raises(ValueError, match="both `layer` and V1 `layers`"):
        wc.load(str(both))
    with pytest.raises(ValueError, match="unknown caffe container"):
        wc.save(str(tmp_path / "x.caffemodel"), SPEC, w, container="v0")


def test_a_failing_writer_leaves_nothing(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    out = tmp_path / "out"
    out.mkdir()
    wc.save(str(out / "keep.pt"), SPEC, _weights(seed=1))  # a checkpoint, so the writer may replace it
    old_contents = (out / "keep.pt").read_bytes()

    def broken_save(obj, f, *a, **k):  # torch_fmt hands torch.save an open file
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        wc.save(str(out / "keep.pt"), SPEC, _weights())
    assert sorted(os.listdir(out)) == ["keep.pt"] and (out / "keep.pt").read_bytes() == old_contents

    def interrupted(obj, f, *a, **k):
        f.write(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wc.save(str(out / "new.pt"), SPEC, _weights())
    assert sorted(os.listdir(out)) == ["keep.pt"]


def test_directory_outputs_replace_atomically(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    w = _weights()
    path = tmp_path / "w.orbax"
    wc.save(str(path), SPEC, w)
    w2 = {k: v + 1 for k, v in w.items()}
    wc.save(str(path), SPEC, w2)  # replaces the existing directory
    assert np.array_equal(wc.load(str(path))[1]["conv1.weight"], w2["conv1.weight"])
    assert sorted(os.listdir(tmp_path)) == ["w.orbax"]
    with pytest.raises(ValueError, match="exists as a file"):
        (tmp_path / "f.orbax").write_bytes(b"")
        wc.save(str(tmp_path / "f.orbax"), SPEC, w)
    assert sorted(os.listdir(tmp_path)) == ["f.orbax", "w.orbax"]


def test_a_recorded_spec_that_differs_from_this_version(tmp_path):
    """A canonical file made under another definition of its variant does not load silently as this one."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    spec, w = SPEC, _weights()
    good = tmp_path / "w.safetensors"
    wc.save(str(good), spec, w)

    with safe_open(str(good), framework="numpy") as f:
        meta = f.metadata()
    recorded = json.loads(meta["spec"])
    conv1 = next(layer for layer in recorded["layers"] if layer["name"] == "conv1")
    conv1["stride"] = 2
    bad = tmp_path / "old.safetensors"
    save_file(load_file(str(good)), str(bad), metadata={**meta, "spec": json.dumps(recorded)})
    with pytest.raises(ValueError, match=r"old\.safetensors: the recorded spec differs.*'conv1' \(stride: file 2, "
                                         r"here 4\); pass --variant"):
        wc.load(str(bad))
    spec2, w2 = wc.load(str(bad), variant="torchvision")
    assert spec2 == spec and all(np.array_equal(w[k], w2[k]) for k in w)
