"""The public AlexNet checkpoints, pinned (URL, digest, variant, preprocessing, claimed accuracy), and a
downloader that verifies them before use.

    from alexnet_parity.weights_convert.pretrained import fetch, load_pretrained
    path = fetch("bvlc_alexnet")                     # cached, digest-checked file path
    spec, weights = load_pretrained("torchvision")   # canonical weights of the verified file

Every fact in CHECKPOINTS names where it comes from (`sources`); a fact no source gives is None, never a
guess. The cache is ALEXNET_HOME, else $XDG_CACHE_HOME/alexnet-parity, else ~/.cache/alexnet-parity; files
are in its checkpoints/ folder under their published names. A download goes to NAME.part, which is resumed
with an HTTP Range request after an interruption, checked against the pinned digest when complete, and only
then renamed to NAME; a file whose digest does not match is deleted. urllib only: no new dependency.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from alexnet_parity.common import VARIANTS

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte before a download counts as interrupted
RETRIES = 3  # resumed attempts after an interruption, in one fetch()
# torch.hub's check_hash rule (torch/hub.py HASH_REGEX): the hex digits between the last '-' and the '.' of the
# file name are a prefix of the file's SHA-256
HUB_HASH = re.compile(r"-([a-f0-9]*)\.")
DIGEST_LENGTH = {"sha256": 64, "sha1": 40}

TORCHVISION_SRC = ("torchvision/models/alexnet.py, AlexNet_Weights.IMAGENET1K_V1 (url, _metrics ImageNet-1K "
                   "acc@1/acc@5, transforms=ImageClassification(crop_size=224), _file_size)")
BVLC_ALEXNET_SRC = "BVLC caffe models/bvlc_alexnet/readme.md (caffemodel_url, sha1, license, accuracy)"
CAFFENET_SRC = "BVLC caffe models/bvlc_reference_caffenet/readme.md (caffemodel_url, sha1, license, accuracy)"
ONNX_SRC = "onnx/models bvlc_alexnet/README.md (download URL, input data_0 float[1,3,224,224], license BSD)"


@dataclass(frozen=True)
class Checkpoint:
    name: str
    title: str
    url: str
    file_name: str
    variant: str  # the common.VARIANTS entry whose spec the file holds
    format: str | None  # the weights_convert format that reads it; None: listed for reference, not fetchable
    digest_algorithm: str | None  # "sha256" | "sha1"
    # hex; shorter than the algorithm's full length: a prefix (torch.hub's rule), which the digest must start with
    digest: str | None
    size: int | None  # bytes, where a source gives the exact number
    size_note: str  # what the sources say about the size when not the exact bytes
    license: str
    top1: float | None  # ImageNet validation accuracy (%) the source claims, centre crop
    top5: float | None
    preprocessing_note: str  # where the file's preprocessing differs from, or adds to, its variant's Preprocessing
    sources: tuple[tuple[str, str], ...]  # (which facts, where they come from)

    @property
    def preprocessing(self):
        """The variant's own common.variants.Preprocessing: each pinned file was trained with it (see
        preprocessing_note for what that record leaves out)."""
        return VARIANTS[self.variant].preprocessing

    @property
    def fetchable(self) -> bool:
        return self.format is not None and self.digest is not None


CHECKPOINTS: dict[str, Checkpoint] = {c.name: c for c in (
    Checkpoint(
        name="torchvision", title="torchvision AlexNet_Weights.IMAGENET1K_V1",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", file_name="alexnet-owt-7be5be79.pth",
        variant="torchvision", format="torchvision", digest_algorithm="sha256", digest="7be5be79",
        size=None, size_note="233.087 MiB (torchvision's _file_size meta); exact bytes not published",
        license="not stated for the weights (torchvision's code is BSD-3-Clause; its docs say pretrained weights "
                "may carry the training data's terms)",
        top1=56.522, top5=79.066,
        preprocessing_note="resize the short side to 256, centre crop 224, RGB in [0, 1], ImageNet mean/std",
        sources=(("url, accuracy, crop, size note", TORCHVISION_SRC),
                 ("digest", "torch.hub check_hash: SHA-256 starts with the 8 hex digits in the file name"),
                 ("license", "pytorch/vision LICENSE (BSD-3-Clause) and README.rst 'Pre-trained Model License' "
                             "(pytorch/vision#5714)"))),
    Checkpoint(
        name="bvlc_alexnet", title="BVLC AlexNet (Caffe model zoo)",
        url="http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel", file_name="bvlc_alexnet.caffemodel",
        variant="caffe", format="caffe", digest_algorithm="sha1", digest="9116a64c0fbe4459d18f4bb6b56d647b63920377",
        size=None, size_note="not published in the readme",
        license="unrestricted", top1=57.1, top5=80.2,
        preprocessing_note="BGR 0-255 minus the ilsvrc_2012_mean mean image (256x256) before the 227 crop; the "
                           "variant's Preprocessing records that mean image's per-channel mean (predict/eval --mean-image "
                           "ilsvrc_2012_mean.binaryproto subtract the image itself)",
        sources=(("url, sha1, license, accuracy (centre crop, iteration 360,000)", BVLC_ALEXNET_SRC),
                 ("preprocessing", "BVLC caffe models/bvlc_alexnet/train_val.prototxt (crop_size 227, mean_file "
                                   "imagenet_mean.binaryproto), data/ilsvrc12/get_ilsvrc_aux.sh"))),
    Checkpoint(
        name="bvlc_reference_caffenet", title="BVLC CaffeNet (Caffe model zoo)",
        url="http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
        file_name="bvlc_reference_caffenet.caffemodel",
        variant="caffenet", format="caffe", digest_algorithm="sha1",
        digest="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
        size=None, size_note="232.6MB (BVLC caffe docs/getting_pretrained_models.md); exact bytes not published",
        license="unrestricted", top1=57.4, top5=80.4,
        preprocessing_note="BGR 0-255 minus the ilsvrc_2012_mean mean image (256x256) before the 227 crop; the "
                           "variant's Preprocessing records that mean image's per-channel mean (predict/eval --mean-image "
                           "ilsvrc_2012_mean.binaryproto subtract the image itself)",
        sources=(("url, sha1, license, accuracy (centre crop, iteration 310,000)", CAFFENET_SRC),
                 ("size note", "BVLC caffe docs/getting_pretrained_models.md"))),
    Checkpoint(
        name="bvlc_alexnet_onnx", title="ONNX model zoo bvlc_alexnet (converted from BVLC AlexNet via Caffe2)",
        url="https://s3.amazonaws.com/download.onnx/models/opset_6/bvlc_alexnet.tar.gz",
        file_name="bvlc_alexnet.tar.gz", variant="caffe", format=None, digest_algorithm=None, digest=None,
        size=None, size_note="244 MB (the README's 'Model size'); exact bytes not published",
        license="BSD (onnx/models LICENSE)", top1=57.1, top5=80.2,
        preprocessing_note="the README gives no pre-processing steps; input data_0 is float[1, 3, 224, 224]",
        sources=(("url, size note, license, accuracy (restated from BVLC)", ONNX_SRC),
                 ("not fetchable", "the zoo publishes no digest to pin (it is a tar.gz, not a bare .onnx)"))),
)}


class FetchError(ValueError):
    """A download, digest or cache problem: one line naming the checkpoint and the file."""


def known() -> str:
    return ", ".join(CHECKPOINTS)


def get_checkpoint(name: str) -> Checkpoint:
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {name!r}; choose one of: {known()}")
    return CHECKPOINTS[name]


def cache_dir(override: str | os.PathLike | None = None) -> str:
    """Where checkpoints are cached: the override, else ALEXNET_HOME, else the user's cache directory."""
    if override:
        return os.path.abspath(os.path.expanduser(os.fspath(override)))
    if os.environ.get("ALEXNET_HOME"):
        return os.path.abspath(os.path.expanduser(os.environ["ALEXNET_HOME"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "alexnet-parity")


def cached_path(name: str, cache: str | os.PathLike | None = None) -> str:
    return os.path.join(cache_dir(cache), "checkpoints", get_checkpoint(name).file_name)


def file_digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def digest_matches(entry: Checkpoint, hexdigest: str) -> bool:
    """True when the file's digest is the pinned one (or, for a prefix such as torch.hub's, starts with it)."""
    return bool(entry.digest) and hexdigest.lower().startswith(entry.digest.lower())


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class _Progress:
    """One line on stderr, rewritten in place on a terminal; elsewhere a line at most every 10%."""

    def __init__(self, label: str, total: int | None, done: int, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last_time, self.last_step, self.start, self.start_bytes = 0.0, -1, time.monotonic(), done

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.total:
            step = int(10 * done / self.total)
            if not final and (now - self.last_time < 0.2 if self.tty else step == self.last_step):
                return
            self.last_step = step
            text = f"{self.label}: {_mib(done)} of {_mib(self.total)} ({100 * done / self.total:.0f}%)"
        else:
            if not final and now - self.last_time < (0.2 if self.tty else 5.0):
                return
            text = f"{self.label}: {_mib(done)}"
        self.last_time = now
        rate = (done - self.start_bytes) / max(now - self.start, 1e-9)
        text += f", {_mib(int(rate))}/s"
        print(("\r" + text + "\x1b[K") if self.tty else text, end="\n" if final or not self.tty else "",
              file=sys.stderr, flush=True)


def _download(entry: Checkpoint, part: str, progress: bool, say) -> None:
    """Append the rest of entry.url to `part` (from its current length, by an HTTP Range request). Raises
    OSError or HTTPException (URLError, timeouts, resets, http.client.IncompleteRead) on an interruption."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(entry.url, headers={"User-Agent": "alexnet-parity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part is as long as the file, or longer: start again
            say(f"{entry.name}: the server refuses to resume from {_mib(have)}; starting again")
            os.remove(part)
            return _download(entry, part, progress, say)
        raise
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:  # resumed from somewhere else: do not splice
                raise FetchError(f"{entry.name}: {entry.url} resumed at {response.headers.get('Content-Range')!r}, "
                                 f"not byte {have}")
            say(f"{entry.name}: resuming at {_mib(have)}")
        elif have:  # 200: the server ignored the Range header and sends the whole file
            say(f"{entry.name}: the server cannot resume; downloading from the start")
            have = 0
        total = have + length if length is not None else entry.size
        bar = _Progress(f"{entry.name}: downloading {entry.url}", total, have, progress)
        with open(part, "r+b" if have else "wb") as f:
            f.seek(have)
            f.truncate()
            done = have
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar.update(done)
            f.flush()
            os.fsync(f.fileno())
        if length is not None and done < total:  # the connection closed early without an exception
            raise http.client.IncompleteRead(b"", total - done)
        bar.update(done, final=True)


def fetch(name: str, cache: str | os.PathLike | None = None, *, offline: bool = False, progress: bool = True,
          retries: int = RETRIES) -> str:
    """The path of checkpoint `name` in the cache, downloaded (resuming a .part) unless there already, and
    always digest-checked before it is returned. offline: only the cache; a missing file is an error.
    A file that fails the digest is deleted and a FetchError says so."""
    entry = get_checkpoint(name)
    if not entry.fetchable:
        raise FetchError(f"{name}: listed for reference only ({entry.url}); "
                         + dict(entry.sources).get("not fetchable", "no format or digest to pin"))
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    path = cached_path(name, cache)
    part = path + ".part"
    algo = entry.digest_algorithm
    if os.path.exists(path):
        found = file_digest(path, algo)
        if digest_matches(entry, found):
            return path
        os.remove(path)
        if offline:
            raise FetchError(f"{name}: the cached {path} has {algo} {found}, not {entry.digest}; deleted it "
                             f"(run without --offline to download it again)")
        say(f"{name}: the cached {path} has {algo} {found}, not {entry.digest}; deleted it, downloading again")
    if offline:
        have = f" (a partial download of {_mib(os.path.getsize(part))} is at {part})" if os.path.exists(part) else ""
        raise FetchError(f"{name}: not in the cache {os.path.dirname(path)}{have} and offline; run without "
                         f"--offline to download {entry.url}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _download(entry, part, progress, say)
            break
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts and resets are OSErrors
            reason = getattr(err, "reason", None) or err.__class__.__name__
            kept = os.path.getsize(part) if os.path.exists(part) else 0
            if isinstance(err, urllib.error.HTTPError) or attempt == retries:
                raise FetchError(f"{name}: downloading {entry.url} failed ({reason}); "
                                 + (f"{_mib(kept)} kept in {part}, the next fetch resumes there" if kept
                                    else "nothing was kept")) from None
            say(f"{name}: download interrupted ({reason}) at {_mib(kept)}; resuming")
    found = file_digest(part, algo)
    if not digest_matches(entry, found):
        os.remove(part)
        raise FetchError(f"{name}: the download from {entry.url} has {algo} {found}, not {entry.digest}; deleted it")
    os.replace(part, path)
    return path


def load_pretrained(name: str, cache: str | os.PathLike | None = None, *, offline: bool = False,
                    progress: bool = True):
    """(spec, canonical float32 weights) of a pinned checkpoint, fetched and verified first."""
    from alexnet_parity import weights_convert as wc

    entry = get_checkpoint(name)
    path = fetch(name, cache, offline=offline, progress=progress)
    return wc.load(path, fmt=entry.format, variant=entry.variant)


def resolve_weights(weights, spec):
    """What an engine's build_model(spec, weights=...) gets: a canonical dict or None as given, or for a str
    the named pinned checkpoint's weights, read from the cache (never downloading: `alexnet fetch NAME` or
    fetch(NAME) does that), which must be for `spec`."""
    if not isinstance(weights, str):
        return weights
    entry = get_checkpoint(weights)
    if not entry.fetchable:
        raise FetchError(f"weights={weights!r}: listed for reference only, not loadable ({entry.url})")
    if not os.path.exists(cached_path(weights)):
        raise FetchError(f"weights={weights!r}: not in the cache {os.path.dirname(cached_path(weights))}; "
                         f"download it first with `alexnet fetch {weights}` (or pretrained.fetch({weights!r}))")
    found, loaded = load_pretrained(weights, offline=True, progress=False)
    if found != spec:
        raise ValueError(f"weights={weights!r} holds {found.describe()}, not {spec.describe()}: build it with "
                         f"get_spec({found.variant!r})")
    return loaded


def origin_of(path: str, fmt: str) -> str | None:
    """The pinned checkpoint a file is: a hub folder's record, or a file of a pinned one's name and format
    whose digest is the pinned one (so a model card claims a source's accuracy only for its own file)."""
    from alexnet_parity.weights_convert import hub

    if fmt == "hub":
        return hub.origin(path)
    name = os.path.basename(os.path.normpath(path))
    return next((c.name for c in CHECKPOINTS.values() if c.fetchable and c.file_name == name and c.format == fmt
                 and os.path.isfile(path) and digest_matches(c, file_digest(path, c.digest_algorithm))), None)


# framework -> (format, file name suffix) of the file `alexnet fetch --framework F` writes
def native_files() -> dict[str, tuple[str, str]]:
    """engine name -> (its native format, the file ending written for it), from the engine registry."""
    from alexnet_parity.common.engines import compared

    return {name: (e.formats[0], e.suffix) for name, e in compared().items() if e.formats}


def destination(name: str, to: str | None, framework: str | None) -> tuple[str | None, str | None]:
    """(path, format) that fetch's conversion writes, or (None, None) for no conversion. --to a folder (an
    existing one or one ending in a separator) or no --to with a framework: the framework's native file named
    after the checkpoint; --to a file: its format from the name, which must be the framework's when given."""
    from alexnet_parity import weights_convert as wc

    native = native_files()
    if framework is not None and framework not in native:
        raise ValueError(f"unknown framework {framework!r}; choose one of: {', '.join(native)}")
    if to is None and framework is None:
        return None, None
    # an existing Orbax checkpoint directory is a file to replace, any other directory a folder to write into
    folder = to is None or to.endswith(os.sep) or (os.path.isdir(to) and not wc.get_format("flax").sniff(to))
    if folder:
        fmt, suffix = native[framework or next(iter(native))]
        return os.path.join(to or ".", name + suffix), fmt
    fmt = wc.guess_format(to, reading=False)
    from alexnet_parity.common.engines import engine_for_format

    if framework is not None and engine_for_format(fmt).name != framework:
        raise ValueError(f"--to {to}: a {fmt} file, not a {framework} one; name it *{native[framework][1]} or "
                         f"give a folder")
    return to, fmt


__all__ = ["Checkpoint", "CHECKPOINTS", "FetchError", "fetch", "load_pretrained", "cache_dir", "cached_path",
           "get_checkpoint", "destination", "resolve_weights", "origin_of", "native_files", "digest_matches", "file_digest", "HUB_HASH"]
