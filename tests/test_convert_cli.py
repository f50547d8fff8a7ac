"""`alexnet convert`: the command line, its progress lines, --verify, and the frameworks it imports."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec
from alexnet_parity.parity_tests.core import parity_weights

from _convert_util import frameworks_present

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "flax", "orbax")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A small (headless, 9 MB) and a classifier (pool5 2x2) checkpoint of the caffe variant."""
    root = tmp_path_factory.mktemp("cli")
    small = get_spec("caffe", include_top=False)
    topped = get_spec("caffe", input_size=71, num_classes=10)
    out = {}
    for name, spec in (("small", small), ("topped", topped)):
        path = root / f"{name}.safetensors"
        wc.save(str(path), spec, parity_weights(spec, seed=1))
        out[name] = (path, spec)
    return out


def _imported_by(argv) -> list[str]:
    """Run `alexnet convert ...` in a fresh interpreter and list the frameworks it imported."""
    code = ("import json, sys; from alexnet_parity.alexnet_cli.main import main; rc = main(sys.argv[1:]); "
            f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules])); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "convert", *map(str, argv), "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_imports_only_what_the_two_formats_need(sources, tmp_path):
    src, _ = sources["small"]
    assert _imported_by([src, tmp_path / "a.caffemodel"]) == []  # canonical -> caffe: numpy only
    if frameworks_present("torch"):
        assert _imported_by([src, tmp_path / "a.pth", "--to", "torchvision"]) == ["torch"]
        assert _imported_by([tmp_path / "a.pth", tmp_path / "b.caffemodel", "--variant", "caffe"]) == ["torch"]
    if frameworks_present("flax"):  # JAX's side never pulls in TensorFlow
        assert "tensorflow" not in _imported_by([src, tmp_path / "c.msgpack"])


def test_verify_runs_both_frameworks(sources, tmp_path, capsys):
    if not (frameworks_present("torch") and frameworks_present("keras")):
        pytest.skip("needs torch and keras")
    src, spec = sources["topped"]
    pt = tmp_path / "w.pt"
    assert main(["convert", str(src), str(pt)]) == 0
    assert main(["convert", str(pt), str(tmp_path / "w.keras"), "--variant", "caffe", "--input-size", "71",
                 "--verify"]) == 0
    out = capsys.readouterr().out
    assert "w.keras: keras, caffe (input 71, 10 classes), 23,354,762 parameters" in out
    line = next(line for line in out.splitlines() if line.startswith("verify:"))
    assert "16 tensors bit-identical" in line and "torch vs keras" in line
    err = float(line.split("max relative error ")[1].split()[0])
    assert err < 1e-5
    assert wc.load(str(tmp_path / "w.keras"))[0] == spec


def test_verify_against_the_numpy_reference(sources, tmp_path, capsys):
    src, _ = sources["small"]
    assert main(["convert", str(src), str(tmp_path / "w.v1.caffemodel"), "--caffe-container", "layers",
                 "--verify"]) == 0
    out = capsys.readouterr().out
    assert "numpy reference vs numpy reference: max relative error 0.00e+00" in out
    data = (tmp_path / "w.v1.caffemodel").read_bytes()
    assert data[0] >> 3 == 1 and b"conv1" in data[:200]  # name first, then V1 `layers` (field 2) follow
    from alexnet_parity.weights_convert import protowire as pw

    assert {n for n, _, _ in pw.parse(data, "x")} == {1, 2, 3, 4}


def test_progress_lines_for_large_files_only(sources, tmp_path, capsys):
    src, _ = sources["topped"]  # 89 MiB: above the 32 MiB threshold
    assert main(["convert", str(src), str(tmp_path / "a.caffemodel")]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("[convert]")]
    assert progress and progress[0].startswith("[convert] reading ") and "MiB" in progress[0]
    assert any("wrote" in line for line in progress)
    assert main(["convert", str(src), str(tmp_path / "b.caffemodel"), "-q"]) == 0
    assert capsys.readouterr().err == ""
    small, _ = sources["small"]  # 9 MiB: quiet
    assert main(["convert", str(small), str(tmp_path / "c.caffemodel")]) == 0
    assert capsys.readouterr().err == ""


def test_from_and_to_override_the_names(sources, tmp_path, capsys):
    if not frameworks_present("torch"):
        pytest.skip("needs torch")
    src, spec = sources["small"]
    odd = tmp_path / "weights.bin"
    assert main(["convert", str(src), str(odd), "--to", "torchvision"]) == 0
    assert main(["convert", str(odd), str(tmp_path / "back.safetensors"), "--from", "torchvision",
                 "--variant", "caffe"]) == 0
    back = wc.load(str(tmp_path / "back.safetensors"))
    assert back[0] == spec
    assert main(["convert", str(odd), str(tmp_path / "x.safetensors"), "--from", "torch"]) == 2
    assert "torchvision's naming" in capsys.readouterr().err
