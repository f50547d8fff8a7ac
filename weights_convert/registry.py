"""The checkpoint formats, as records each format module defines about itself.

A format module defines `FORMAT = Format(...)`; weights_convert/__init__.py registers each with one
`register(...)` line. Everything that lists formats (guess_format, get_format, `alexnet convert --help`)
asks FORMATS, so a new format is its module and that line. Registration order is the tie-break where two
formats sniff the same bytes and the name claims neither (a zip with no telling name reads as torch, not
.keras): put the formats with the most specific sniffers first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Format:
    name: str
    load: Callable  # (path, variant=None, input_size=None, **options) -> (spec, weights)
    save: Callable  # (path, spec, weights, **options) -> None
    claims: Callable  # (path) -> bool: does this path's name say it is a file of this format?
    sniff: Callable | None  # (path) -> bool: does what exists at this path look like this format (magic bytes)?
    frameworks: tuple[str, ...]  # the Python packages it imports
    holds: str  # which variants it can hold: "all" or comma-separated names
    files: str  # what its files are called, for --help
    directory: str = ""  # what a directory of this format is ("an Orbax checkpoint"), for the error on others
    guessed: bool = True  # False: never guessed from a path (torchvision: told from torch by its keys, see pick)
    # (path, options) -> the registered format a file guessed as this one really is, read from the file; may put
    # what it read into options so that load does not read it twice (torch -> torch or torchvision)
    pick: Callable | None = None
    exists: Callable = os.path.exists  # (path) -> bool: is there a checkpoint at path (slim: its PREFIX.index)?
    # (path, spec, **options) -> (common.Preprocessing, "file" | "format") | None: what the file records its
    # weights expect, else its format's convention (a caffemodel: Caffe's), else None (the variant's own applies)
    preprocessing: Callable | None = None
    keeps_preprocessing: bool = False  # save takes preprocessing= and records it in the file


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if fmt.name in FORMATS and FORMATS[fmt.name] is not fmt:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def can_hold(fmt: str, variant: str) -> bool:
    holds = get_format(fmt).holds
    return holds == "all" or variant in holds.split(",")


def guess_format(path: str, reading: bool = True) -> str:
    """The format a path names. Writing: by its name. Reading: by what exists there and its name together --
    a format whose sniff knows the content and whose name claims the path; else the name's format; else the
    first registered format whose sniff knows the content (a file or directory with no telling name).
    The name outranks a content match it contradicts because some sniffers are weak by nature (a caffemodel
    has no magic number, a msgpack map's first byte is any of 0x80-0x8f, as a pickle's is): a damaged .pth
    whose first byte happens to fit must still get the torch reader's error. A .pt/.pth guesses as torch;
    load() then tells torchvision by its keys (Format.pick)."""
    path = os.fspath(path)
    formats = [f for f in FORMATS.values() if f.guessed]
    by_name = [f for f in formats if f.claims(path)]
    if reading:
        both = [f for f in by_name if f.sniff is not None and f.sniff(path)]
        if both:
            return both[0].name
        # the other sniffers only where the name settles nothing: some read the whole file (ONNX parses it)
        if not by_name or os.path.isdir(path):
            by_content = [f for f in formats if f.sniff is not None and f.sniff(path)]
            if os.path.isdir(path) and not by_content:
                kinds = " nor ".join(f.directory for f in formats if f.directory)
                raise ValueError(f"{path}: a directory that is neither {kinds}; pass --from")
            if by_content and not by_name:
                return by_content[0].name
    if by_name:
        return by_name[0].name
    raise ValueError(f"{path}: cannot tell the format from the name; pass --{'from' if reading else 'to'} "
                     f"(one of {', '.join(FORMATS)})")
