"""hub: a Hugging Face Hub-style model folder (numpy and safetensors only; no huggingface_hub needed).

Layout: DIR/config.json (format tag, the spec as Spec.to_dict, the preprocessing its weights expect,
and the pinned checkpoint it came from, if any), DIR/model.safetensors (a canonical file, which records the
spec and preprocessing too) and DIR/README.md, a model card generated from that data. It is what
huggingface_hub's snapshot_download delivers for a repository holding those files: a folder of them, or,
from its cache, models--ORG--NAME/snapshots/REV/ whose entries are links to ../../blobs/HASH; the links
into that repository's blobs/ are followed, any other link out of the folder is refused.

An existing DIR is replaced (atomically, as a whole) only when it is a hub folder or empty.
"""
from __future__ import annotations

import json
import os

from alexnet_parity.common import VARIANTS, Spec, get_spec

from . import canonical
from . import preprocessing as prep
from ._common import atomic_output, check_regular, inside
from .registry import Format

FORMAT_TAG = "alexnet-parity/hub/1"
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
MAX_CONFIG = 1 << 20  # a config.json is a few KB


def _blobs(folder: str) -> str | None:
    """The blobs/ folder of a huggingface_hub cache snapshot (REPO/snapshots/REV), or None."""
    parent = os.path.dirname(os.path.abspath(folder))
    return os.path.join(os.path.dirname(parent), "blobs") if os.path.basename(parent) == "snapshots" else None


def member(folder: str, name: str) -> str:
    """The path of a file of the folder, checked: a regular file in it, or in its snapshot's blobs/."""
    path = os.path.join(folder, name)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{folder}: no {name}: not a hub folder")
    blobs = _blobs(folder)
    if not inside(path, folder) and not (blobs is not None and inside(path, blobs)):
        raise ValueError(f"{folder}: {name} is a link to {os.path.realpath(path)}, outside the folder (and its "
                         f"snapshot's blobs/); refusing to follow it")
    check_regular(path, folder, name)
    return path


def read_config(folder: str) -> dict:
    path = member(folder, CONFIG)
    if os.path.getsize(path) > MAX_CONFIG:
        raise ValueError(f"{path}: over {MAX_CONFIG >> 10} KiB: not an alexnet-parity config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path}: not a JSON file") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_TAG:
        raise ValueError(f"{path}: not an alexnet-parity config (no \"format\": \"{FORMAT_TAG}\")")
    return config


def load(path: str, variant: str | None = None, input_size: int | None = None) -> tuple[Spec, dict]:
    config = read_config(path)
    spec, weights = canonical.load(member(path, WEIGHTS), variant=variant, input_size=input_size)
    if variant is None and input_size is None and config.get("spec") != json.loads(json.dumps(spec.to_dict())):
        raise ValueError(f"{os.path.join(path, CONFIG)}: its spec is not the one {WEIGHTS} records "
                         f"({spec.describe()}); the folder is inconsistent")
    return spec, weights


def read_preprocessing(path: str, spec: Spec, **_):
    config = read_config(path)
    if "preprocessing" not in config:
        return None
    return prep.from_dict(config["preprocessing"], os.path.join(path, CONFIG)), "file"


def origin(path: str) -> str | None:
    """The pinned checkpoint (weights_convert.pretrained) the folder's weights came from, if it says."""
    found = read_config(path).get("origin")
    return found if isinstance(found, str) else None


def config_of(spec: Spec, pre, origin: str | None) -> dict:
    return {"format": FORMAT_TAG, "library_name": "alexnet-parity", "model_type": "alexnet",
            "variant": spec.variant, "input_size": spec.input_size, "num_classes": spec.num_classes,
            "include_top": spec.include_top, "parameters": spec.param_count(), "weights": WEIGHTS,
            "origin": origin, "preprocessing": prep.to_dict(pre), "spec": spec.to_dict()}


def model_card(config: dict) -> str:
    """README.md of the folder, from its config (and the registries it names): nothing in it is typed by hand."""
    from alexnet_parity.common.diff import differences, summary_line

    from .pretrained import CHECKPOINTS

    spec = get_spec(config["variant"], input_size=config["input_size"], num_classes=config["num_classes"],
                    include_top=config["include_top"])
    v, pre = VARIANTS[spec.variant], prep.from_dict(config["preprocessing"], CONFIG)
    entry = CHECKPOINTS.get(config.get("origin") or "")
    rows = [("variant", f"`{spec.variant}`: {v.title}"), ("definition", v.source),
            ("parameters", f"{spec.param_count():,}"), ("input", "x".join(map(str, spec.input_shape))),
            ("outputs", f"{spec.num_classes} classes" if spec.include_top else "features (no classifier)"),
            ("preprocessing", f"{prep.describe(pre)} ({pre.source})")]
    if entry is not None:
        digest = f"{entry.digest_algorithm} {entry.digest}" if entry.digest else "no digest"
        rows += [("weights", f"`{entry.name}`: {entry.title}, {entry.url} ({digest})"),
                 ("claimed accuracy", f"top-1 {entry.top1}%, top-5 {entry.top5}% (ImageNet val, as its source "
                                      f"claims: {entry.sources[0][1]})" if entry.top1 is not None else "not claimed"),
                 ("license", entry.license)]
    else:
        rows += [("weights", "not a pinned checkpoint (see `alexnet fetch --list`)"),
                 ("claimed accuracy", "none"), ("license", "not stated")]
    paper = get_spec("paper")
    diffs = differences(paper, spec)
    lines = ["---", "library_name: alexnet-parity", f"tags: [image-classification, alexnet, {spec.variant}]",
             "---", f"# AlexNet `{spec.variant}` ({spec.describe()})", "",
             "Generated by alexnet-parity (weights_convert/hub.py) from this folder's config.json.", "",
             "| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in rows), "",
             f"## Against the paper (`alexnet diff paper {spec.variant}`)", "", summary_line(paper, spec), ""]
    lines += [f"- [{d.aspect}] {d.layer}: {d.a} -> {d.b}" for d in diffs] or ["- no differences"]
    lines += ["", "## Use", "", "```", "alexnet predict IMAGE --weights THIS_FOLDER",
              "alexnet convert THIS_FOLDER model.pt   # or .keras, .msgpack, .onnx, .caffemodel ...", "```", "",
              "```python", "from alexnet_parity import weights_convert",
              "spec, weights = weights_convert.load(\"THIS_FOLDER\")", "```", ""]
    return "\n".join(lines)


def save(path: str, spec: Spec, weights: dict, preprocessing=None, origin: str | None = None) -> None:
    path = path.rstrip(os.sep) or path
    config = config_of(spec, preprocessing or spec.preprocessing, origin)
    with atomic_output(path, replaces=replaceable, what="a hub folder (config.json + model.safetensors)",
                       directory=True) as tmp:
        os.mkdir(tmp)
        canonical.save(os.path.join(tmp, WEIGHTS), spec, weights, preprocessing=preprocessing)
        with open(os.path.join(tmp, CONFIG), "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2, sort_keys=True)
            fh.write("\n")
        with open(os.path.join(tmp, CARD), "w", encoding="utf-8") as fh:
            fh.write(model_card(config))


def claims(path: str) -> bool:
    return sniff(path)


def sniff(path: str) -> bool:
    """A folder whose config.json carries the hub format tag."""
    if not os.path.isdir(path):
        return False
    try:
        read_config(path)
    except (OSError, ValueError):
        return False
    return True


def replaceable(path: str) -> bool:
    return sniff(path) or (os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path))


FORMAT = Format("hub", load, save, claims, sniff, frameworks=(), holds="all",
                files="a folder: config.json, model.safetensors, README.md", directory="a hub folder",
                preprocessing=read_preprocessing, keeps_preprocessing=True)
