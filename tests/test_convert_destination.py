"""A convert never deletes what it did not make: a destination that exists is replaced only when it is a
checkpoint of the format being written; an existing checkpoint directory is swapped in one rename."""
from __future__ import annotations

import os

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec

from _convert_util import frameworks_present

SPEC = get_spec("torchvision", include_top=False)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in SPEC.weight_shapes().items()}


def _tree(root) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes): what must survive a refused conversion."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = fh.read()
    return found


@pytest.fixture()
def project(tmp_path):
    """A user's ordinary folder holding a checkpoint, notes and a subfolder."""
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    wc.save(proj / "model.safetensors", SPEC, _weights())
    (proj / "notes.txt").write_text("my notes\n")
    (proj / "sub" / "data.bin").write_bytes(b"\x00\x01" * 100)
    return proj


@pytest.mark.skipif(not frameworks_present("flax"), reason="needs JAX and Flax")
@pytest.mark.parametrize("dst", ["proj", "proj.orbax"])
def test_a_folder_that_is_no_orbax_checkpoint_is_refused_and_kept(project, tmp_path, capsys, dst):
    target = tmp_path / dst
    if dst.endswith(".orbax"):
        target.mkdir()
        (target / "keep.txt").write_text("mine\n")
    before = _tree(tmp_path)
    code = main(["convert", str(project / "model.safetensors"), str(target), "--to", "flax", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "exists and is not an Orbax checkpoint" in err[0] and str(target) in err[0], err
    assert _tree(tmp_path) == before, "a refused conversion changed the user's files"
    assert sorted(os.listdir(tmp_path)) == sorted(set(os.listdir(tmp_path))), "left a temporary behind"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], os.listdir(tmp_path)


@pytest.mark.parametrize("dst,fmt", [("notes.txt", "canonical"), ("notes.txt", "caffe"), ("out.pth", "torch"),
                                     ("x.weights.h5", "keras"), ("x.msgpack", "flax")])
def test_a_file_of_another_kind_is_refused_and_kept(project, capsys, dst, fmt):
    if not frameworks_present(fmt):
        pytest.skip(f"the {fmt} format's framework is not installed")
    target = project / dst
    if not target.exists():
        target.write_text("not a checkpoint\n")
    before = _tree(project)
    code = main(["convert", str(project / "model.safetensors"), str(target), "--to", fmt, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "exists and is not" in err[0], err
    assert _tree(project) == before


def test_an_existing_checkpoint_of_the_format_is_replaced(project, capsys):
    dst = project / "copy.safetensors"
    wc.save(dst, SPEC, _weights(seed=1))
    assert main(["convert", str(project / "model.safetensors"), str(dst), "-q"]) == 0
    _, back = wc.load(dst)
    assert all(np.array_equal(back[k], v) for k, v in _weights().items())
    # an empty file holds nothing to lose (mktemp makes them)
    empty = project / "empty.safetensors"
    empty.write_bytes(b"")
    assert main(["convert", str(project / "model.safetensors"), str(empty), "-q"]) == 0
    assert wc.load(empty)[0] == SPEC


@pytest.mark.skipif(not frameworks_present("flax"), reason="needs JAX and Flax")
def test_an_orbax_checkpoint_is_swapped_whole_and_read_by_relative_path(project, monkeypatch):
    monkeypatch.chdir(project)
    wc.save("ckpt.orbax", SPEC, _weights(seed=1))
    inode = os.stat("ckpt.orbax").st_ino
    assert main(["convert", "model.safetensors", "ckpt.orbax", "-q"]) == 0
    assert os.stat("ckpt.orbax").st_ino != inode, "the directory was not replaced as a whole"
    for relative in ("ckpt.orbax", "./ckpt.orbax", "ckpt.orbax/"):
        _, back = wc.load(relative)
        assert all(np.array_equal(back[k], v) for k, v in _weights().items())
    assert not [n for n in os.listdir(project) if n.startswith(".")], os.listdir(project)
