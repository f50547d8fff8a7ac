"""Hostile inputs for the data path of alexnet train / eval / predict (issue 17): image files (absurd declared
sizes, truncations, byte flips, 16-bit and odd modes, compressed-chunk bombs, FIFOs, devices, links), image
folders (link loops, links out, FIFOs, deep nesting, bombs inside) and edited training state. Every case runs
in this process under a 30 s alarm, through the functions the commands call (decode_image -> the predict
preprocessing, ImageFolder -> Batches, checkpoint_state -> `alexnet train --resume`), plus every image case
once through `alexnet predict`. A traceback is any exception the CLI would not turn into one line.

    PYTHONPATH=. python scripts/hostile_data.py [--quick] [--no-predict]

prints one line per category and the totals: cases, accepted, refused with one line, tracebacks, hangs,
peak RSS of the process (an upper bound for any single case)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet_parity.alexnet_cli import main as cli
from alexnet_parity.alexnet_cli.predict_cmd import preprocess
from alexnet_parity.common import get_spec
from alexnet_parity.training import Batches, ImageFolder
from alexnet_parity.training.loop import CHECKPOINT, CHECKPOINT_TAG, checkpoint_state

ONE_LINE = (ValueError, FileNotFoundError, KeyError)  # what alexnet_cli.main prints as one line
SPEC = get_spec("paper", input_size=52, num_classes=2)
HANG_S = 30


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


def png(w, h, depth=8, color=2, rows=b"", extra=b"") -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)) + extra
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _ztxt_bomb(n=200 << 20) -> bytes:
    data = b"Comment\0\0" + zlib.compress(b"\0" * n, 9)
    return struct.pack(">I", len(data)) + b"zTXt" + data + struct.pack(">I", zlib.crc32(b"zTXt" + data))


def valid_images(rng) -> dict[str, bytes]:
    pix = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    out = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif"),
                     ("WEBP", "webp"), ("PPM", "ppm")):
        buf = io.BytesIO()
        Image.fromarray(pix).save(buf, format=fmt)
        out[ext] = buf.getvalue()
    return out


def image_cases(root: Path, quick: bool) -> list[Path]:
    rng = np.random.default_rng(0)
    cases: list[Path] = []

    def add(name, data: bytes):
        path = root / name
        path.write_bytes(data)
        cases.append(path)

    sizes = [0, 1, 2, 255, 65535, 100000, 1 << 20, (1 << 31) - 1, (1 << 32) - 1]
    for w in sizes:
        for h in sizes:
            add(f"dims-{w}x{h}.png", png(w, h))
    for depth, color in ((16, 0), (16, 2), (16, 4), (16, 6), (1, 0), (2, 0), (4, 0), (8, 3), (8, 4)):
        w, h = 9, 7
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
        row_bytes = (w * channels * depth + 7) // 8
        rows = b"".join(b"\0" + rng.integers(0, 256, row_bytes, dtype=np.uint8).tobytes() for _ in range(h))
        extra = b""
        if color == 3:  # a palette
            pal = rng.integers(0, 256, 768, dtype=np.uint8).tobytes()
            extra = struct.pack(">I", 768) + b"PLTE" + pal + struct.pack(">I", zlib.crc32(b"PLTE" + pal))
        add(f"mode-{depth}bit-color{color}.png", png(w, h, depth, color, rows, extra))
    add("ztxt-bomb.png", png(4, 4, rows=b"".join(b"\0" + bytes(12) for _ in range(4)), extra=_ztxt_bomb()))
    add("idat-bomb.png", png(20000, 20000, rows=b"\0" * (64 << 20)))  # 400 M pixels, over the bound
    for ratio in ((1, 100000), (100000, 1), (2, 50000)):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((*ratio, 3), np.uint8)).save(buf, format="PNG")
        add(f"aspect-{ratio[0]}x{ratio[1]}.png", buf.getvalue())
    for mode in ("I;16", "I", "F", "CMYK", "LA", "P", "1", "L", "RGBA"):
        im = Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        im.save(buf, format="TIFF")
        add(f"tiff-{mode.replace(';', '_')}.tif", buf.getvalue())
    gif = bytearray(valid_images(rng)["gif"])
    gif[6:10] = struct.pack("<HH", 65535, 65535)  # a huge logical screen
    add("gif-screen.gif", bytes(gif))
    valid = valid_images(rng)
    cuts = 6 if quick else 20
    flips = 4 if quick else 20
    for ext, data in valid.items():
        for cut in np.unique(np.linspace(0, len(data) - 1, cuts).astype(int)):
            add(f"trunc-{cut}.{ext}", data[:cut])
        for k in range(flips):
            mutated = bytearray(data)
            for pos in rng.integers(0, len(data), int(rng.integers(1, 8))):
                mutated[pos] = int(rng.integers(0, 256))
            add(f"flip-{k}.{ext}", bytes(mutated))
    # not regular files, and links
    os.mkfifo(root / "fifo.png")
    os.symlink("/dev/zero", root / "zero.png")
    os.symlink("/dev/null", root / "null.png")
    os.symlink("/dev/urandom", root / "urandom.jpg")
    (root / "folder.png").mkdir()
    os.symlink("nowhere.png", root / "broken.png")
    os.symlink("loop-b.png", root / "loop-a.png")
    os.symlink("loop-a.png", root / "loop-b.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.png"))
    cases += [root / n for n in ("fifo.png", "zero.png", "null.png", "urandom.jpg", "folder.png", "broken.png",
                                 "loop-a.png", "socket.png")]
    return cases


def folder_cases(root: Path) -> list[Path]:
    rng = np.random.default_rng(1)

    def folder(name, classes=("cat", "dog"), n=3):
        top = root / name
        for c in classes:
            (top / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(top / c / f"{i}.png")
        return top

    cases = []

    def case(name, build):
        top = folder(name)
        build(top)
        cases.append(top)

    case("up", lambda t: os.symlink("..", t / "cat" / "up"))
    case("two-ups", lambda t: (os.symlink("..", t / "cat" / "up"), os.symlink("..", t / "cat" / "up2")))
    case("deep-up", lambda t: ((t / "cat" / "a" / "b").mkdir(parents=True), os.symlink("../../..", t / "cat/a/b/up")))
    case("to-other-class", lambda t: os.symlink("../dog", t / "cat" / "dogs"))
    case("abs-root", lambda t: os.symlink("/", t / "cat" / "root"))
    case("loop-in-class", lambda t: ((t / "cat" / "x").mkdir(), os.symlink("..", t / "cat" / "x" / "back")))
    case("self-loop", lambda t: os.symlink(".", t / "cat" / "self"))
    case("class-is-root", lambda t: os.symlink(".", t / "all"))
    case("class-is-other", lambda t: os.symlink("cat", t / "kitten"))
    case("class-to-parent", lambda t: os.symlink("..", t / "parent"))
    case("fifo", lambda t: os.mkfifo(t / "cat" / "f.png"))
    case("fifo-no-ext", lambda t: os.mkfifo(t / "cat" / "notes"))
    case("dev-zero", lambda t: os.symlink("/dev/zero", t / "cat" / "z.jpg"))
    case("dir-named-jpg", lambda t: (t / "cat" / "d.jpg").mkdir())
    case("broken-link", lambda t: os.symlink("gone.png", t / "cat" / "b.png"))
    case("link-loop-file", lambda t: (os.symlink("l2.png", t / "cat" / "l1.png"),
                                      os.symlink("l1.png", t / "cat" / "l2.png")))
    case("bomb-inside", lambda t: (t / "cat" / "0.png").write_bytes(png(100000, 100000)))
    case("truncated-inside", lambda t: (t / "cat" / "0.png").write_bytes((t / "cat" / "1.png").read_bytes()[:60]))
    case("empty-class", lambda t: shutil.rmtree(t / "dog") or (t / "dog").mkdir())

    def deep(t):
        here = t / "cat"
        for i in range(200):
            here = here / f"d{i}"
        here.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(here / "deep.png")
    case("deep-200", deep)

    def many_links(t):
        for i in range(30):
            os.symlink("..", t / "cat" / f"up{i}")
    case("thirty-ups", many_links)
    return cases


def state_cases(root: Path, quick: bool) -> list[Path]:
    """Checkpoints with tiny tensors and edited state (checkpoint_state and `train --resume` read the metadata
    first); a valid state reaches load_checkpoint, whose shape check refuses the tiny tensors."""
    from safetensors.numpy import save_file

    config = {"framework": "torch", "variant": "paper", "input_size": 52, "num_classes": 2, "epochs": 90,
              "batch": 6, "lr": 0.01, "seed": 0, "data": "synthetic:16", "val_fraction": 0.25, "patience": 1}
    good = {"epoch": 1, "step": 0, "global_step": 2, "schedule": {"lr": 0.01, "best": 0.5, "bad_epochs": 0},
            "partial": {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0}, "history": [], "config": config}
    weird = ["3", None, True, -1, 10 ** 30, 1.5, [], {}, float("nan"), float("inf"), "x" * 1000]
    states: dict[str, str | None] = {"valid": json.dumps(good)}

    def set_path(doc, keys, value):
        doc = json.loads(json.dumps(doc))
        target = doc
        for k in keys[:-1]:
            target = target[k]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
        return doc

    fields = [(k,) for k in good] + [("schedule", k) for k in good["schedule"]] + \
             [("partial", k) for k in good["partial"]] + [("config", k) for k in config]
    for keys in fields:
        for j, value in enumerate([KeyError] + (weird[:3] if quick else weird)):
            states[f"{'.'.join(keys)}={j}"] = json.dumps(set_path(good, keys, value))
    text = json.dumps(good)
    for cut in range(0, len(text), 7 if quick else 2):
        states[f"cut-{cut}"] = text[:cut]
    states["nested"] = "[" * 100000 + "]" * 100000
    states["absent"] = None
    states["step-past"] = json.dumps({**good, "step": 99, "global_step": 101,
                                      "partial": {**good["partial"], "steps": 99}})
    cases = []
    for name, state in states.items():
        out = root / name.replace("/", "_")
        out.mkdir()
        meta = {"format": CHECKPOINT_TAG, "variant": "paper", "input_size": "52", "num_classes": "2",
                "spec": SPEC.to_json()}
        if state is not None:
            meta["state"] = state
        save_file({"conv1.weight": np.zeros((2, 2), np.float32)}, str(out / CHECKPOINT), metadata=meta)
        cases.append(out)
    for name, meta in {"no-format": {}, "variant-bogus": {"variant": "vgg"}, "size-text": {"input_size": "big"},
                       "classes-huge": {"num_classes": "200000"}, "spec-bad-json": {"spec": "{"}}.items():
        out = root / f"meta-{name}"
        out.mkdir()
        full = {"format": CHECKPOINT_TAG, "variant": "paper", "input_size": "52", "num_classes": "2",
                "spec": SPEC.to_json(), "state": json.dumps(good), **meta}
        if name == "no-format":
            del full["format"]
        save_file({"conv1.weight": np.zeros((2, 2), np.float32)}, str(out / CHECKPOINT), metadata=full)
        cases.append(out)
    for name, data in {"garbage": b"\xff" * 64, "empty": b"", "header-huge": struct.pack("<Q", 1 << 60) + b"{}",
                       "header-not-json": struct.pack("<Q", 4) + b"{{{{"}.items():
        out = root / f"file-{name}"
        out.mkdir()
        (out / CHECKPOINT).write_bytes(data)
        cases.append(out)
    out = root / "file-fifo"
    out.mkdir()
    os.mkfifo(out / CHECKPOINT)
    cases.append(out)
    return cases


def attempt(fn) -> str:
    """'ok', 'refused' (one line), 'traceback: ...' or 'hang'."""
    signal.alarm(HANG_S)
    try:
        fn()
        return "ok"
    except Hang:
        return "hang"
    except ONE_LINE:
        return "refused"
    except BaseException as err:  # noqa: BLE001 - the point is to count them
        return f"traceback: {type(err).__name__}: {err}"
    finally:
        signal.alarm(0)


def cli_call(*argv) -> None:
    """alexnet ARGV in this process: a non-zero exit with one stderr line is 'refused', anything on stderr
    that looks like a traceback is one."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    text = err.getvalue()
    if "Traceback" in text:
        raise RuntimeError(text)
    if code != 0:
        last = text.strip().splitlines()[-1] if text.strip() else ""
        if not last.startswith(f"alexnet {argv[0]}: error:"):
            raise RuntimeError(f"exit {code} without a one-line error: {text!r}")
        raise ValueError(last)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer truncations, flips and edits (for CI)")
    parser.add_argument("--no-predict", action="store_true", help="skip the pass through `alexnet predict` "
                        "(a model load per case; the preprocessing pass covers the same decoding)")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    totals: dict[str, int] = {}
    problems: list[str] = []
    try:
        from alexnet_parity import weights_convert
        from alexnet_parity.common import init_weights
        weights = tmp / "w.safetensors"
        weights_convert.save(str(weights), SPEC, init_weights(SPEC, seed=0), fmt="canonical")
        (tmp / "img").mkdir()
        (tmp / "fold").mkdir()
        (tmp / "state").mkdir()

        def predict_path(path):
            x = preprocess(str(path), SPEC)
            assert x.shape == (1, 3, 52, 52) and np.isfinite(x).all()

        def folder_path(top):
            src = ImageFolder(top)
            Batches(src, SPEC, len(src), train=True)[0]  # every image decoded

        categories = {
            "image files (decode + predict preprocessing)": (image_cases(tmp / "img", args.quick), predict_path),
            "image folders (ImageFolder + a training batch)": (folder_cases(tmp / "fold"), folder_path),
            "training state (alexnet train --resume)": (
                state_cases(tmp / "state", args.quick),
                lambda out: (checkpoint_state(out / CHECKPOINT),
                             cli_call("train", "--resume", "--out", out, "--framework", "torch"))),
        }
        image_paths = categories["image files (decode + predict preprocessing)"][0]
        if not args.no_predict:  # every third image (every fifth with --quick), and every file that is no image
            odd = [p for p in image_paths if not p.is_file() or p.is_symlink()]
            categories["image files (alexnet predict)"] = (
                image_paths[::5 if args.quick else 3] + odd,
                lambda path: cli_call("predict", path, "--weights", weights, "--framework", "torch"))
        for label, (cases, fn) in categories.items():
            counts: dict[str, int] = {}
            start = time.monotonic()
            for case in cases:
                result = attempt(lambda: fn(case))
                kind = result.split(":")[0]
                counts[kind] = counts.get(kind, 0) + 1
                if kind in ("traceback", "hang"):
                    problems.append(f"{label}: {case.name}: {result[:300]}")
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            print(f"{label}: {len(cases)} cases, {counts.get('ok', 0)} accepted, {counts.get('refused', 0)} refused "
                  f"with one line, {counts.get('traceback', 0)} tracebacks, {counts.get('hang', 0)} hangs "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in problems:
        print("  " + line)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total: {sum(totals.values())} cases, {totals.get('ok', 0)} accepted, {totals.get('refused', 0)} refused, "
          f"{totals.get('traceback', 0)} tracebacks, {totals.get('hang', 0)} hangs; peak RSS {peak:.0f} MB")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
