"""`alexnet fetch` and weights_convert.pretrained: the pinned registry is well-formed, and downloads verify,
resume, cache and convert. Every download is of a generated checkpoint served from 127.0.0.1 by a thread;
an autouse guard fails any test whose code opens another URL, so no test reaches the real ones."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import re
import threading
import urllib.parse
import urllib.request

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import VARIANTS, get_spec, init_weights
from alexnet_parity.weights_convert import pretrained as pt


@pytest.fixture(autouse=True)
def local_only(monkeypatch, tmp_path):
    """Every URL opened must be on 127.0.0.1; the cache defaults to a fresh folder, never the user's."""
    real = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {url}"
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setenv("ALEXNET_HOME", str(tmp_path / "home"))


class Server:
    """Serves `files` (path -> bytes); honours Range; `cut` drops the connection after that many bytes on the
    first request for a path; records each request's Range header."""

    def __init__(self, files: dict[str, bytes], cut: int | None = None, honour_range: bool = True):
        self.files, self.cut, self.ranges, self.served = files, cut, [], set()
        self.honour_range = honour_range
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                owner.ranges.append(rng)
                rng = rng if owner.honour_range else None
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                if start >= len(data) and rng:
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if owner.cut is not None and self.path not in owner.served:
                    owner.served.add(self.path)
                    self.wfile.write(body[:owner.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                owner.served.add(self.path)
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A small torchvision-keyed .pth and a small caffemodel, made by weights_convert's writers."""
    folder = tmp_path_factory.mktemp("served")
    made = {}
    for name, variant, fmt, suffix in (("torchvision", "torchvision", "torchvision", ".pth"),
                                       ("bvlc_alexnet", "caffe", "caffe", ".caffemodel")):
        spec = get_spec(variant, input_size=64 if variant == "torchvision" else None, include_top=False)
        weights = init_weights(spec, seed=3)
        path = folder / f"{name}{suffix}"
        wc.save(path, spec, weights, fmt=fmt)
        made[name] = (path.read_bytes(), spec, weights)
    return made


def pin(monkeypatch, name: str, data: bytes, server: Server) -> pt.Checkpoint:
    """Point registry entry `name` at the local copy of `data`, with data's real digest (torch.hub's 8-digit
    SHA-256 prefix in the file name for torchvision, the full SHA-1 for a caffemodel)."""
    entry = pt.CHECKPOINTS[name]
    if entry.digest_algorithm == "sha256":
        digest = hashlib.sha256(data).hexdigest()[:8]
        file_name = f"alexnet-owt-{digest}.pth"
    else:
        digest = hashlib.sha1(data).hexdigest()
        file_name = entry.file_name
    server.files[f"/{file_name}"] = server.files.pop(f"/{name}", data)
    local = dataclasses.replace(entry, url=server.url(f"/{file_name}"), file_name=file_name, digest=digest)
    monkeypatch.setitem(pt.CHECKPOINTS, name, local)
    return local


def cli(capsys, *argv):
    code = main(["fetch", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def cache_files(cache) -> list[str]:
    folder = os.path.join(cache, "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def as_read(spec):
    """What a file without fc6 can say of its spec: the variant, no top, the variant's own input size."""
    return get_spec(spec.variant, include_top=False)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


# --- the registry -------------------------------------------------------------------------------------------

def test_registry_entries_are_well_formed():
    assert {"torchvision", "bvlc_alexnet", "bvlc_reference_caffenet"} <= pt.CHECKPOINTS.keys()
    for name, c in pt.CHECKPOINTS.items():
        assert c.name == name and c.variant in VARIANTS and c.sources
        assert c.url.rsplit("/", 1)[1] == c.file_name, name
        assert c.preprocessing is VARIANTS[c.variant].preprocessing
        assert c.size is None or c.size > 0
        if c.top1 is not None:
            assert 0 < c.top1 < c.top5 < 100, name
        if not c.fetchable:
            continue
        assert c.format in wc.FORMATS and wc.can_hold(c.format, c.variant), name
        assert re.fullmatch(r"[0-9a-f]+", c.digest), name
        if c.digest_algorithm == "sha1":  # the Caffe model zoo publishes whole SHA-1s
            assert len(c.digest) == pt.DIGEST_LENGTH["sha1"], name
        else:  # torch.hub: the hex digits in the file name are the SHA-256's prefix
            assert c.digest_algorithm == "sha256"
            assert pt.HUB_HASH.search(c.file_name).group(1) == c.digest, name
            assert 8 <= len(c.digest) < pt.DIGEST_LENGTH["sha256"]


def test_registry_pins_the_published_facts():
    tv, alex, caffenet = (pt.CHECKPOINTS[n] for n in ("torchvision", "bvlc_alexnet", "bvlc_reference_caffenet"))
    assert tv.url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert (tv.digest, tv.top1, tv.top5, tv.format, tv.variant) == ("7be5be79", 56.522, 79.066, "torchvision",
                                                                     "torchvision")
    assert alex.url == "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel"
    assert (alex.digest, alex.top1, alex.top5, alex.variant) == ("9116a64c0fbe4459d18f4bb6b56d647b63920377",
                                                                 57.1, 80.2, "caffe")
    assert caffenet.url == "http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel"
    assert (caffenet.digest, caffenet.top1, caffenet.top5, caffenet.variant) == (
        "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46", 57.4, 80.4, "caffenet")
    assert alex.preprocessing.color_order == "BGR" and alex.preprocessing.pixel_range == 255.0
    assert tv.preprocessing.color_order == "RGB" and tv.preprocessing.crop == 224


def test_prefix_digest_must_start_the_full_one():
    entry = dataclasses.replace(pt.CHECKPOINTS["torchvision"], digest="7be5be79")
    assert pt.digest_matches(entry, "7be5be79" + "0" * 56)
    assert not pt.digest_matches(entry, "0" * 8 + "7be5be79" + "0" * 48)  # contains it, does not start with it


def test_cache_dir_follows_alexnet_home_then_xdg(monkeypatch, tmp_path):
    assert pt.cache_dir() == str(tmp_path / "home")
    monkeypatch.delenv("ALEXNET_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pt.cache_dir() == str(tmp_path / "xdg" / "alexnet-parity")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert pt.cache_dir() == str(tmp_path / "user" / ".cache" / "alexnet-parity")
    assert pt.cache_dir(tmp_path / "given") == str(tmp_path / "given")


# --- downloads ----------------------------------------------------------------------------------------------

def test_good_download_verifies_and_converts(capsys, monkeypatch, tmp_path, checkpoints):
    data, spec, weights = checkpoints["torchvision"]
    server = Server({"/torchvision": data})
    try:
        entry = pin(monkeypatch, "torchvision", data, server)
        out = tmp_path / "alexnet.safetensors"
        code, stdout, err = cli(capsys, "torchvision", "--to", str(out))
    finally:
        server.stop()
    assert code == 0, err
    cached = pt.cached_path("torchvision")
    assert open(cached, "rb").read() == data and cache_files(pt.cache_dir()) == [entry.file_name]
    assert "downloading" in err and "100%" in err  # the progress line
    assert stdout.startswith(f"{out}: canonical, ")
    spec2, back = wc.load(out)
    assert spec2 == as_read(spec) and same(back, weights)


def test_framework_picks_its_native_file_in_a_folder(capsys, monkeypatch, tmp_path, checkpoints):
    data, spec, weights = checkpoints["torchvision"]
    server = Server({"/torchvision": data})
    try:
        pin(monkeypatch, "torchvision", data, server)
        code, stdout, err = cli(capsys, "torchvision", "--framework", "torch", "--to", f"{tmp_path}/new/", "-q")
    finally:
        server.stop()
    assert code == 0, err
    out = tmp_path / "new" / "torchvision.pt"
    assert err == "" and stdout.startswith(f"{out}: torch, ")
    spec2, back, fmt = wc.load_as(out)
    assert fmt == "torch" and spec2 == as_read(spec) and same(back, weights)


def test_to_file_of_another_framework_is_refused_before_downloading(capsys, tmp_path):
    code, _, err = cli(capsys, "torchvision", "--framework", "keras", "--to", str(tmp_path / "x.pt"))
    assert code == 2 and err.count("\n") == 1 and "x.pt" in err and ".weights.h5" in err
    assert cache_files(pt.cache_dir()) == []


def test_caffemodel_download_loads_as_its_variant(monkeypatch, checkpoints):
    data, spec, weights = checkpoints["bvlc_alexnet"]
    server = Server({"/bvlc_alexnet": data})
    try:
        pin(monkeypatch, "bvlc_alexnet", data, server)
        spec2, back = pt.load_pretrained("bvlc_alexnet", progress=False)
    finally:
        server.stop()
    assert spec2.variant == "caffe" and same(back, weights)


def test_flipped_byte_fails_the_digest_and_leaves_nothing(capsys, monkeypatch, checkpoints):
    data, _, _ = checkpoints["torchvision"]
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    server = Server({"/torchvision": bytes(bad)})
    try:
        pin(monkeypatch, "torchvision", data, server)  # pinned to the good file's digest
        code, stdout, err = cli(capsys, "torchvision", "-q")
    finally:
        server.stop()
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "sha256" in lines[0] and "deleted" in lines[0], err
    assert cache_files(pt.cache_dir()) == []


def test_cut_download_is_kept_and_resumed_with_range(monkeypatch, checkpoints):
    data, _, _ = checkpoints["torchvision"]
    half = len(data) // 2
    server = Server({"/torchvision": data}, cut=half)
    try:
        entry = pin(monkeypatch, "torchvision", data, server)
        with pytest.raises(pt.FetchError, match="resumes"):
            pt.fetch("torchvision", progress=False, retries=0)
        part = pt.cached_path("torchvision") + ".part"
        assert os.path.getsize(part) == half and cache_files(pt.cache_dir()) == [entry.file_name + ".part"]
        path = pt.fetch("torchvision", progress=False, retries=0)
    finally:
        server.stop()
    assert server.ranges == [None, f"bytes={half}-"]
    assert open(path, "rb").read() == data and cache_files(pt.cache_dir()) == [entry.file_name]


def test_one_fetch_retries_an_interrupted_download(monkeypatch, checkpoints):
    data, _, _ = checkpoints["bvlc_alexnet"]
    server = Server({"/bvlc_alexnet": data}, cut=len(data) // 3)
    try:
        pin(monkeypatch, "bvlc_alexnet", data, server)
        path = pt.fetch("bvlc_alexnet", progress=False)
    finally:
        server.stop()
    assert server.ranges == [None, f"bytes={len(data) // 3}-"]
    assert open(path, "rb").read() == data


def test_a_server_that_ignores_range_restarts_from_the_start(monkeypatch, checkpoints):
    data, _, _ = checkpoints["torchvision"]
    server = Server({"/torchvision": data}, cut=len(data) // 2, honour_range=False)
    try:
        pin(monkeypatch, "torchvision", data, server)
        path = pt.fetch("torchvision", progress=False)
    finally:
        server.stop()
    assert server.ranges == [None, f"bytes={len(data) // 2}-"]  # asked to resume, sent the whole file
    assert open(path, "rb").read() == data


def test_second_fetch_is_served_from_the_cache_without_the_server(capsys, monkeypatch, checkpoints):
    data, spec, weights = checkpoints["torchvision"]
    server = Server({"/torchvision": data})
    try:
        pin(monkeypatch, "torchvision", data, server)
        first = pt.fetch("torchvision", progress=False)
    finally:
        server.stop()
    assert len(server.ranges) == 1
    assert pt.fetch("torchvision", progress=False) == first  # the server is gone: any request would fail
    code, stdout, err = cli(capsys, "torchvision", "--offline")
    assert code == 0 and stdout.strip() == first and err == ""
    spec2, back = pt.load_pretrained("torchvision", offline=True)
    assert spec2 == as_read(spec) and same(back, weights)


def test_corrupted_cache_file_is_deleted_and_fetched_again(monkeypatch, checkpoints):
    data, _, _ = checkpoints["torchvision"]
    server = Server({"/torchvision": data})
    try:
        pin(monkeypatch, "torchvision", data, server)
        path = pt.fetch("torchvision", progress=False)
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"\x00\x01\x02")
        with pytest.raises(pt.FetchError, match="deleted"):
            pt.fetch("torchvision", offline=True, progress=False)
        assert not os.path.exists(path)
        assert pt.fetch("torchvision", progress=False) == path
    finally:
        server.stop()
    assert open(path, "rb").read() == data and len(server.ranges) == 2


def test_offline_with_an_empty_cache_is_one_clear_line(capsys, tmp_path):
    code, stdout, err = cli(capsys, "bvlc_alexnet", "--offline", "--cache-dir", str(tmp_path / "empty"))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "offline" in err and "not in the cache" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "empty").exists()


def test_unknown_name_lists_the_known_ones(capsys):
    code, _, err = cli(capsys, "alexnet-v9")
    assert code == 2 and err.count("\n") == 1
    assert all(name in err for name in pt.CHECKPOINTS)


def test_a_reference_only_entry_is_not_fetched(capsys):
    listed = [c.name for c in pt.CHECKPOINTS.values() if not c.fetchable]
    for name in listed:
        code, _, err = cli(capsys, name)
        assert code == 2 and err.count("\n") == 1 and "reference only" in err


def test_list_prints_every_entry(capsys):
    code, stdout, _ = cli(capsys, "--list")
    assert code == 0 and len(stdout.strip().splitlines()) == len(pt.CHECKPOINTS)
    assert "9116a64c0fbe4459d18f4bb6b56d647b63920377" in stdout and "56.522" in stdout


# --- build_model(spec, weights=NAME) in every engine ----------------------------------------------------------

@pytest.fixture
def cached_bvlc(monkeypatch, checkpoints):
    """The generated bvlc_alexnet caffemodel in the test's cache, its digest pinned: what `alexnet fetch` leaves."""
    data, spec, weights = checkpoints["bvlc_alexnet"]
    entry = dataclasses.replace(pt.CHECKPOINTS["bvlc_alexnet"], digest=hashlib.sha1(data).hexdigest())
    monkeypatch.setitem(pt.CHECKPOINTS, "bvlc_alexnet", entry)
    os.makedirs(os.path.dirname(pt.cached_path("bvlc_alexnet")))
    with open(pt.cached_path("bvlc_alexnet"), "wb") as fh:
        fh.write(data)
    return as_read(spec), weights


@pytest.mark.parametrize("engine", ["torch", "keras", "flax", "onnxruntime"])
def test_build_model_takes_a_checkpoint_name_from_the_cache(cached_bvlc, engine):
    from alexnet_parity.common.engines import compared

    record = compared()[engine]
    if not record.available():
        pytest.skip(record.missing())
    spec, weights = cached_bvlc
    assert same(record.export_weights(record.build_model(spec, weights="bvlc_alexnet")), weights)


def test_build_model_names_the_fetch_command_when_the_cache_lacks_it(capsys):
    from alexnet_parity.torch_impl import build_model

    with pytest.raises(pt.FetchError, match=r"not in the cache .*`alexnet fetch bvlc_alexnet`"):
        build_model(get_spec("caffe"), weights="bvlc_alexnet")
    with pytest.raises(ValueError, match="unknown checkpoint 'alexnet'"):
        build_model(get_spec("caffe"), weights="alexnet")


def test_build_model_refuses_a_checkpoint_of_another_spec(cached_bvlc):
    from alexnet_parity.torch_impl import build_model

    with pytest.raises(ValueError, match=r"holds caffe \(input 227, no top\), not caffenet"):
        build_model(get_spec("caffenet", include_top=False), weights="bvlc_alexnet")
