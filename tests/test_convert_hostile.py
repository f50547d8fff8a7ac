"""Issue 17, the converter's half: write failures are one line and leave nothing; hostile files (FIFOs,
devices, links out of the checkpoint, bombs, absurd sizes) are refused before anything is allocated or
blocks; the prototxt reader is linear; SIGTERM cleans up like Ctrl-C and a killed writer's leftovers go
with the next write; outputs get the umask's mode.

Full disks are simulated with RLIMIT_FSIZE (writes past it fail with EFBIG, for root too) and, where
`unshare -m` works, a small tmpfs (real ENOSPC, where HDF5 used to segfault); a read-only destination is a
chmod 555 folder, or for root (who ignores modes) /sys, where file creation fails even for root.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec
from alexnet_parity.weights_convert import _common

from _convert_util import CONTAINERS, container_id, frameworks_present, no_hang

SPEC = get_spec("torchvision", input_size=64, include_top=False)
SLIM = get_spec("slim-v2", input_size=67, include_top=False)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _weights(spec=SPEC, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in spec.weight_shapes().items()}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-src")
    wc.save(root / "tv.safetensors", SPEC, _weights())
    wc.save(root / "slim.safetensors", SLIM, _weights(SLIM))
    return root


# the read-only and mode tests of the framework formats build a model each: CI runs the numpy and torch ones
LIGHT = ("canonical", "torch", "torchvision", "caffe")
LIGHT_FIRST = [c if c[0] in LIGHT else pytest.param(*[c], marks=pytest.mark.slow, id=container_id(c))
               for c in CONTAINERS]


def _src_for(fmt, sources):
    return str(sources / ("slim.safetensors" if fmt == "slim" else "tv.safetensors"))


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored), for this process, root included."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _one_error_line(err: str, dst: str, *words: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("alexnet convert:")]
    assert "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and "error:" in lines[0] and dst in lines[0], err[-2000:]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


# --- item 3: write errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("container", CONTAINERS, ids=container_id)
def test_a_full_disk_is_one_line_and_leaves_nothing(container, sources, tmp_path, capsys):
    fmt, ending, options = container
    if not frameworks_present(fmt):
        pytest.skip(f"{fmt} framework not installed")
    out = tmp_path / "out"
    out.mkdir()
    dst = str(out / f"x{ending}")
    argv = ["convert", _src_for(fmt, sources), dst, "--to", fmt, "-q"]
    if fmt == "caffe":
        argv += ["--caffe-container", options["container"]]
    with _file_size_limit(64 << 10):
        code = main(argv)
    assert code == 2
    _one_error_line(capsys.readouterr().err, dst, "cannot write", "File too large")
    time.sleep(0.2)  # anything a background writer still had in flight
    assert os.listdir(out) == [], "a failed write left files behind"


def _read_only_dir(tmp_path):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return str(ro)
    try:  # root ignores modes; sysfs refuses to create files even for root
        open("/sys/alexnet-probe", "wb").close()
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "/sys"
    pytest.skip("no folder that refuses writes for this user")


@pytest.mark.parametrize("container", LIGHT_FIRST, ids=container_id)
def test_a_read_only_destination_is_one_line(container, sources, tmp_path, capsys):
    fmt, ending, options = container
    if not frameworks_present(fmt):
        pytest.skip(f"{fmt} framework not installed")
    folder = _read_only_dir(tmp_path)
    dst = os.path.join(folder, f"alexnet-test-x{ending}")
    before = set(os.listdir(folder))
    assert main(["convert", _src_for(fmt, sources), dst, "--to", fmt, "-q"]) == 2
    _one_error_line(capsys.readouterr().err, dst, "cannot write")
    assert set(os.listdir(folder)) == before


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt || "
                            "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm and a tmpfs mount (a private small disk)")
@pytest.mark.parametrize("ending,fmt", [(".weights.h5", "keras"), (".orbax", "flax")])
def test_a_really_full_disk(ending, fmt, sources, tmp_path):
    """ENOSPC on a 1 MB tmpfs: .weights.h5 crashed the process (SIGSEGV), Orbax left its temporary folder."""
    if not frameworks_present(fmt):
        pytest.skip(f"{fmt} framework not installed")
    disk = tmp_path / "disk"
    disk.mkdir()
    dst = disk / f"x{ending}"
    script = (f"mount -t tmpfs -o size=1m tmpfs {disk} && {sys.executable} -m alexnet_parity.alexnet_cli convert "
              f"{_src_for(fmt, sources)} {dst} -q; code=$?; ls -A {disk}; exit $code")
    env = {**os.environ, "PYTHONPATH": ROOT}
    run = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    _one_error_line(run.stderr, str(dst), "No space left on device")
    assert run.stdout.strip() == "", f"left behind: {run.stdout}"


# --- item 5: untrusted files ------------------------------------------------------------------------------

def _refused(path, fmt, *words, variant=None):
    with no_hang(20):
        with pytest.raises(ValueError) as info:
            wc.load(str(path), fmt=fmt, variant=variant)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


@pytest.mark.parametrize("name,fmt", [("x.safetensors", "canonical"), ("x.pt", "torch"), ("x.caffemodel", "caffe"),
                                      ("x.msgpack", "flax"), ("x.weights.h5", "keras"), ("x.keras", "keras")])
def test_a_fifo_or_device_is_refused_not_read(tmp_path, name, fmt):
    if not frameworks_present(fmt):
        pytest.skip(f"{fmt} framework not installed")
    fifo = tmp_path / name
    os.mkfifo(fifo)
    _refused(fifo, fmt, "FIFO")
    link = tmp_path / ("zero-" + name)
    link.symlink_to("/dev/zero")
    _refused(link, fmt, "character device")


@pytest.mark.skipif(not frameworks_present("flax"), reason="needs JAX and Flax")
@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "outside"])
def test_orbax_entries_that_are_links_or_fifos_are_refused(tmp_path, target):
    ckpt = tmp_path / "c.orbax"
    wc.save(ckpt, SPEC, _weights())
    meta = ckpt / "_CHECKPOINT_METADATA"
    meta.unlink()
    if target == "fifo":
        os.mkfifo(meta)
        words = ("FIFO",)
    elif target == "outside":
        (tmp_path / "elsewhere.json").write_text("{}")
        meta.symlink_to(tmp_path / "elsewhere.json")
        words = ("outside the checkpoint",)
    else:
        meta.symlink_to(target)
        words = ("outside the checkpoint",)
    _refused(ckpt, "flax", *words)


def _h5_external_link(tmp_path, target: str):
    import h5py

    path = tmp_path / "x.weights.h5"
    wc.save(path, SPEC, _weights())
    with h5py.File(path, "r+") as f:
        f["layers/evil"] = h5py.ExternalLink(target, "/data")
    return path


@pytest.mark.skipif(not frameworks_present("keras"), reason="needs TensorFlow and Keras")
def test_h5_external_link_to_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(_h5_external_link(tmp_path, str(fifo)), "keras", "external link")


@pytest.mark.skipif(not frameworks_present("keras"), reason="needs TensorFlow and Keras")
def test_h5_compressed_dataset_bomb_is_refused(tmp_path):
    """A dataset that stores far fewer bytes than it declares (gzip of zeros): refused before reading."""
    import h5py

    path = tmp_path / "x.weights.h5"
    wc.save(path, SPEC, _weights())
    with h5py.File(path, "r+") as f:
        vars_ = next(g["vars"] for g in f["layers"].values() if g["vars"].attrs.get("name") in ("conv1", b"conv1"))
        del vars_["1"]
        vars_.create_dataset("1", shape=(1 << 26,), dtype="f4", compression="gzip", fillvalue=0, chunks=(1 << 20,))
        vars_["1"][:1 << 20] = 0
    assert os.path.getsize(path) < 64 << 20
    _refused(path, "keras", "stores")


def _keras_file(tmp_path, edit=None, extra=None, weights_member=None):
    src = tmp_path / "ok.keras"
    if not src.exists():
        wc.save(src, SPEC, _weights())
    dst = tmp_path / "x.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "config.json" and edit:
                config = json.loads(data)
                edit(config["config"])
                data = json.dumps(config).encode()
            if info.filename == "model.weights.h5" and weights_member is not None:
                zout.writestr(info.filename, weights_member, compress_type=zipfile.ZIP_DEFLATED)
                continue
            zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


@pytest.mark.skipif(not frameworks_present("keras"), reason="needs TensorFlow and Keras")
def test_keras_config_declaring_a_huge_model_is_refused_before_building(tmp_path, monkeypatch):
    import keras

    def must_not_build(*a, **k):
        raise AssertionError("Keras built the model before the config was checked")

    path = _keras_file(tmp_path, edit=lambda c: c.update(num_classes=200000, include_top=True))
    monkeypatch.setattr(keras.saving, "load_model", must_not_build)
    _refused(path, "keras", "200000 classes", "model.weights.h5 holds")


@pytest.mark.skipif(not frameworks_present("keras"), reason="needs TensorFlow and Keras")
def test_keras_bomb_and_assets_are_refused(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    bomb = _keras_file(tmp_path, weights_member=bytes(256 << 20))  # 256 MiB of zeros deflate to 256 KB
    assert os.path.getsize(bomb) < 1 << 20
    _refused(bomb, "keras", "decompression bomb")
    assets = _keras_file(tmp_path, extra={"assets/big.bin": bytes(1 << 20)})
    _refused(assets, "keras", "assets/big.bin")
    assert os.listdir(tmpdir) == [], "unpacked into TMPDIR"


# slim: a TensorBundle index rewritten with a LevelDB table writer of our own, to hold what TF never writes

def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _write_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    from alexnet_parity.weights_convert.protowire import varint

    def block(items):
        body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
        body += struct.pack("<II", 0, 1)
        return body + b"\x00" + struct.pack("<I", _masked(_crc32c(body + b"\x00")))

    data = block(entries)
    meta_offset = len(data)
    meta = block([])
    index_offset = meta_offset + len(meta)
    index = block([(entries[-1][0], varint(0) + varint(len(data) - 5))])
    handles = (varint(meta_offset) + varint(len(meta) - 5) + varint(index_offset) + varint(len(index) - 5))
    footer = handles.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    return data + meta + index + footer


def _index_entries(index: str) -> list[tuple[bytes, bytes]]:
    from alexnet_parity.weights_convert import slim

    data = open(index, "rb").read()
    footer = memoryview(data)[-48:-8]
    _, _, pos = slim._handle(footer, 0, "x")
    offset, size, _ = slim._handle(footer, pos, "x")
    out = []
    for _, handle in slim._table_block(data, offset, size, "x"):
        o, s, _ = slim._handle(handle, 0, "x")
        out += [(k, bytes(v)) for k, v in slim._table_block(data, o, s, "x")]
    return out


@pytest.mark.skipif(not frameworks_present("slim"), reason="needs TensorFlow")
def test_slim_index_with_a_negative_dimension_is_refused(tmp_path):
    """TensorFlow's reader aborts the process (exit 134) on it; run in a child so a regression shows as such."""
    from alexnet_parity.weights_convert import protowire as pw

    prefix = tmp_path / "m.ckpt"
    wc.save(prefix, SLIM, _weights(SLIM))
    entries = _index_entries(f"{prefix}.index")
    name = b"alexnet_v2/conv1/biases"
    fields = [(n, w, v) for n, w, v in pw.parse(dict(entries)[name], "x")]
    rebuilt = b""
    for n, w, v in fields:
        if n == 2:  # shape { dim { size: -64 } }
            dim = pw.key(1, pw.VARINT) + pw.varint(-64)
            shape = pw.key(2, pw.LEN) + pw.varint(len(dim)) + dim
            rebuilt += pw.key(2, pw.LEN) + pw.varint(len(shape)) + shape
        elif w == pw.VARINT:
            rebuilt += pw.key(n, w) + pw.varint(v)
        else:
            rebuilt += pw.key(n, w) + (pw.varint(len(v)) if w == pw.LEN else b"") + bytes(v)
    entries = [(k, rebuilt if k == name else v) for k, v in entries]
    (tmp_path / "m.ckpt.index").write_bytes(_write_table(entries))
    run = subprocess.run([sys.executable, "-m", "alexnet_parity.alexnet_cli", "convert", str(prefix),
                          str(tmp_path / "o.safetensors"), "-q"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 2, (run.returncode, run.stderr[-1500:])
    _one_error_line(run.stderr, "m.ckpt", "negative dimension")


@pytest.mark.skipif(not frameworks_present("slim"), reason="needs TensorFlow")
def test_slim_data_shard_that_is_a_fifo_is_refused(tmp_path):
    prefix = tmp_path / "m.ckpt"
    wc.save(prefix, SLIM, _weights(SLIM))
    shard = tmp_path / "m.ckpt.data-00000-of-00001"
    shard.unlink()
    os.mkfifo(shard)
    _refused(prefix, "slim", "FIFO")
    shard.unlink()
    shard.symlink_to("/dev/zero")
    _refused(prefix, "slim", "outside")


# --- item 6: the prototxt reader is linear -------------------------------------------------------------------

def test_prototxt_long_digit_runs_parse_in_linear_time():
    from alexnet_parity.weights_convert import prototxt

    with no_hang(5):  # the old pattern took ~50 s on 30,000 digits (quadratic backtracking)
        for n in (30_000, 300_000):
            start = time.perf_counter()
            with pytest.raises(ValueError):
                prototxt.parse("name: " + "7" * n + "x", "deploy.prototxt")
            assert time.perf_counter() - start < 1.0
    assert prototxt.parse("a: 12 b: -2.5e3 c: .5 d: 1.f e: 1e5 f: 3.", "p") == [
        ("a", 12), ("b", -2500.0), ("c", 0.5), ("d", 1.0), ("e", 100000.0), ("f", 3.0)]


# --- item 10: signals and leftovers -------------------------------------------------------------------------

def test_sigterm_unwinds_like_ctrl_c(sources, tmp_path):
    """SIGTERM while writing: the temporary is removed (it was left as .x.pth.<hex>.tmp), exit 143."""
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import os, signal, sys\n"
        "from alexnet_parity.weights_convert import _common\n"
        "real = _common.os.replace\n"
        "def slow(a, b):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(a, b)\n"
        "_common.os.replace = slow\n"
        "from alexnet_parity.alexnet_cli.main import main\n"
        f"sys.exit(main(['convert', {_src_for('caffe', sources)!r}, {str(out / 'x.caffemodel')!r}, '-q']))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 143 and "terminated" in run.stderr, (run.returncode, run.stderr[-1000:])
    assert os.listdir(out) == []


def test_a_dead_writers_leftovers_go_with_the_next_write(sources, tmp_path):
    dst = tmp_path / "x.safetensors"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.safetensors.{dead.pid}-0123456789ab.tmp"
    stale_dir = tmp_path / f".x.safetensors.{dead.pid}-0123456789ab.tmp.d"
    live = tmp_path / f".x.safetensors.{os.getppid()}-0123456789ab.tmp"  # a running writer's: kept
    other = tmp_path / f".y.safetensors.{dead.pid}-0123456789ab.tmp"  # another destination's: kept
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    stale_dir.mkdir()
    (stale_dir / "x").write_bytes(b"partial")
    assert main(["convert", _src_for("canonical", sources), str(dst), "-q"]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name, "x.safetensors"])


# --- the smaller ones ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("container", LIGHT_FIRST, ids=container_id)
def test_outputs_get_the_umasks_mode(container, sources, tmp_path):
    fmt, ending, options = container
    if not frameworks_present(fmt):
        pytest.skip(f"{fmt} framework not installed")
    spec = SLIM if fmt == "slim" else SPEC
    old = os.umask(0o022)
    try:
        dst = tmp_path / f"x{ending}"
        wc.save(dst, spec, _weights(spec), fmt=fmt, **options)
    finally:
        os.umask(old)
    paths = [str(dst)] if dst.exists() else [str(p) for p in tmp_path.glob("x.ckpt.*")]
    assert paths
    for path in paths:
        want = 0o755 if os.path.isdir(path) else 0o644
        assert os.stat(path).st_mode & 0o777 == want, (path, oct(os.stat(path).st_mode))


def test_variant_contradicting_a_caffemodels_layers_warns(tmp_path, capsys):
    spec = get_spec("caffenet", input_size=67, include_top=False)
    path = tmp_path / "caffenet.caffemodel"
    wc.save(path, spec, _weights(spec))
    with pytest.warns(_common.CheckpointWarning, match="caffenet's, not caffe's"):
        wc.load(path, variant="caffe")
    assert main(["convert", str(path), str(tmp_path / "o.safetensors"), "--variant", "caffe", "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alexnet convert: warning:") and "caffenet" in err[0], err


@pytest.mark.skipif(not frameworks_present("slim"), reason="needs TensorFlow")
def test_slim_conversion_reports_the_size_written(sources, tmp_path, capsys, monkeypatch):
    from alexnet_parity.alexnet_cli import convert_cmd

    monkeypatch.setattr(convert_cmd, "LARGE", 0)
    assert main(["convert", _src_for("slim", sources), str(tmp_path / "m.ckpt")]) == 0
    wrote = [line for line in capsys.readouterr().err.splitlines() if "wrote" in line]
    size = sum(os.path.getsize(p) for p in tmp_path.glob("m.ckpt.*"))
    assert wrote and f"wrote {size / (1 << 20):.1f} MiB" in wrote[0] and size > 1 << 20, wrote
