"""Hub-style folders (config.json, model.safetensors, a generated README.md) as `alexnet convert --to hub` writes
them and every command reads them: bit-identical round trips, the model card made from data, the layout
huggingface_hub's snapshot_download delivers (links into the cache's blobs/), and the destination rules (a
folder is replaced only when it is a hub folder or empty). Headless caffe nets (3.7 M parameters), no network."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli import main as cli
from alexnet_parity.common import VARIANTS, get_spec, init_weights
from alexnet_parity.common.diff import differences, summary_line
from alexnet_parity.weights_convert import hub
from alexnet_parity.weights_convert import pretrained as pt

SPEC = get_spec("caffe", include_top=False)
FILES = ("README.md", "config.json", "model.safetensors")


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def tree(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    weights = init_weights(SPEC, seed=5)
    wc.save(folder / "net.safetensors", SPEC, weights)
    return folder / "net.safetensors", weights


def test_a_hub_folder_round_trips_bit_identically(source, tmp_path):
    src, weights = source
    code, out, err = run("convert", src, f"{tmp_path / 'a'}{os.sep}", "--to", "hub", "--verify")
    assert code == 0 and "bit-identical" in out, err
    assert sorted(os.listdir(tmp_path / "a")) == list(FILES)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == src.read_bytes()  # the canonical file itself
    spec, back = wc.load(tmp_path / "a")  # the format from what is there
    assert spec == SPEC and all(back[k].dtype == np.float32 and np.array_equal(back[k], weights[k]) for k in weights)

    code, _, err = run("convert", tmp_path / "a", tmp_path / "b", "--to", "hub")
    assert code == 0, err
    assert tree(tmp_path / "b") == tree(tmp_path / "a")
    code, _, err = run("convert", tmp_path / "b", tmp_path / "back.safetensors")
    assert code == 0 and (tmp_path / "back.safetensors").read_bytes() == src.read_bytes(), err


def test_the_config_and_the_model_card_are_made_from_data(monkeypatch, tmp_path):
    """A caffemodel that is the pinned bvlc_alexnet (its digest pinned here, as test_fetch does) becomes a folder
    whose card gives the registry's accuracy and license, the spec's parameter count, and alexnet diff's lines."""
    weights = init_weights(SPEC, seed=6)
    named = tmp_path / "bvlc_alexnet.caffemodel"
    wc.save(named, SPEC, weights)
    entry = dataclasses.replace(pt.CHECKPOINTS["bvlc_alexnet"],
                                digest=hashlib.sha1(named.read_bytes()).hexdigest())
    monkeypatch.setitem(pt.CHECKPOINTS, "bvlc_alexnet", entry)
    code, _, err = run("convert", named, tmp_path / "card", "--to", "hub")
    assert code == 0, err

    config = json.loads((tmp_path / "card" / "config.json").read_text())
    assert config["origin"] == "bvlc_alexnet" and config["variant"] == "caffe"
    assert config["parameters"] == SPEC.param_count() and config["spec"] == json.loads(SPEC.to_json())
    pre = VARIANTS["caffe"].preprocessing
    assert config["preprocessing"]["color_order"] == "BGR" and tuple(config["preprocessing"]["mean"]) == pre.mean

    card = (tmp_path / "card" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: alexnet-parity\n")
    for fact in (f"{SPEC.param_count():,}", VARIANTS["caffe"].title, VARIANTS["caffe"].source, entry.url,
                 entry.digest, f"top-1 {entry.top1}%", f"top-5 {entry.top5}%", entry.license,
                 summary_line(get_spec("paper"), SPEC)):
        assert fact in card, fact
    diffs = differences(get_spec("paper"), SPEC)
    assert diffs and all(f"- [{d.aspect}] {d.layer}: {d.a} -> {d.b}" in card for d in diffs)

    other = tmp_path / "other.caffemodel"  # the same bytes under another name: no claims borrowed
    other.write_bytes(named.read_bytes())
    code, _, err = run("convert", other, tmp_path / "plain", "--to", "hub")
    card = (tmp_path / "plain" / "README.md").read_text()
    assert code == 0 and json.loads((tmp_path / "plain" / "config.json").read_text())["origin"] is None
    assert entry.license not in card and "top-1" not in card and "not a pinned checkpoint" in card


def test_a_snapshot_download_cache_folder_reads_as_a_local_path(source, tmp_path):
    """huggingface_hub's cache: models--ORG--NAME/snapshots/REV/FILE -> ../../blobs/HASH."""
    src, weights = source
    wc.save(tmp_path / "made", SPEC, weights, fmt="hub")
    repo = tmp_path / "models--someone--alexnet-caffe"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, data in tree(tmp_path / "made").items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), snapshot / name)
    spec, back = wc.load(snapshot)
    assert spec == SPEC and all(np.array_equal(back[k], weights[k]) for k in weights)
    code, out, err = run("convert", snapshot, tmp_path / "copy.safetensors")
    assert code == 0 and "(from hub " in out, err

    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(src.read_bytes())
    os.remove(snapshot / "model.safetensors")
    os.symlink(outside, snapshot / "model.safetensors")
    with pytest.raises(ValueError, match="outside the folder"):
        wc.load(snapshot)


def test_a_folder_is_replaced_only_when_it_is_a_hub_folder_or_empty(source, tmp_path):
    src, _ = source
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    code, _, err = run("convert", src, mine, "--to", "hub", "-q")
    assert code == 2 and "exists and is not a hub folder" in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("convert", src, empty, "--to", "hub", "-q")[0] == 0 and sorted(os.listdir(empty)) == list(FILES)
    other = get_spec("caffenet", include_top=False)
    wc.save(tmp_path / "caffenet.safetensors", other, init_weights(other, seed=1))
    assert run("convert", tmp_path / "caffenet.safetensors", empty, "--to", "hub", "-q")[0] == 0  # a hub folder
    assert wc.load(empty)[0] == other
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], "left a temporary behind"


def test_an_inconsistent_or_foreign_folder_is_one_line(source, tmp_path):
    src, weights = source
    wc.save(tmp_path / "h", SPEC, weights, fmt="hub")
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    config["spec"]["layers"][0]["out_channels"] = 64
    (tmp_path / "h" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="inconsistent"):
        wc.load(tmp_path / "h")
    (tmp_path / "h" / "config.json").write_text('{"model_type": "bert"}')  # someone else's hub repository
    code, _, err = run("convert", tmp_path / "h", tmp_path / "x.safetensors")
    assert code == 2 and "a directory that is neither" in err and "a hub folder" in err, err
    assert hub.sniff(tmp_path / "h") is False
