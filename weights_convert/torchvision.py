"""torchvision: a state_dict with torchvision's AlexNet key names (.pt / .pth), e.g. alexnet-owt-7be5be79.pth.

torchvision's AlexNet is two nn.Sequential: `features` (conv, relu, pool, ...) and `classifier` (dropout,
linear, relu, ...), so its keys are Sequential indices. The common one-column re-implementations of the
paper copy that model and add LocalResponseNorm after the first two ReLUs, which shifts the indices
(their Sequential is often called `net`). Both layouts, exactly (tensors in canonical layout, as in torch):

| canonical | torchvision (no LRN) | one-column, LRN (conv relu norm pool) | classifier (both) |
|-----------|----------------------|---------------------------------------|-------------------|
| conv1     | features.0           | features.0  / net.0                   |                   |
| conv2     | features.3           | features.4  / net.4                   |                   |
| conv3     | features.6           | features.8  / net.8                   |                   |
| conv4     | features.8           | features.10 / net.10                  |                   |
| conv5     | features.10          | features.12 / net.12                  |                   |
| fc6       |                      |                                       | classifier.1      |
| fc7       |                      |                                       | classifier.4      |
| fc8       |                      |                                       | classifier.6      |

(".weight" and ".bias" each.) The first column's layout holds the LRN-free variants (torchvision,
slim-v2), the second the ones with LRN (paper, caffe, caffenet, single-column; pool-then-norm CaffeNet
has the same indices). Writing uses `features.`; reading takes `features.` or `net.`. The file holds no
spec: the variant is inferred from the shapes within the layout's variants (or given). Wrapped
checkpoints and "module." prefixes are unwrapped as in torch_fmt.
"""
from __future__ import annotations

from alexnet_parity.common import VARIANTS, Spec

from . import preprocessing as prep
from ._common import finish, resolve_spec
from .registry import Format
from .torch_fmt import read_state_dict, save_state_dict, sniff

CONV_INDICES = {"plain": (0, 3, 6, 8, 10), "lrn": (0, 4, 8, 10, 12)}
FC_INDICES = (1, 4, 6)
CONV_PREFIXES = ("features.", "net.")
WRITE_PREFIX = "features."


def key_map(layout: str, prefix: str = WRITE_PREFIX) -> dict[str, str]:
    """{torchvision-style key: canonical name} for one of the two layouts of the table above."""
    names = {}
    for i, index in enumerate(CONV_INDICES[layout], start=1):
        for kind in ("weight", "bias"):
            names[f"{prefix}{index}.{kind}"] = f"conv{i}.{kind}"
    for i, index in enumerate(FC_INDICES, start=6):
        for kind in ("weight", "bias"):
            names[f"classifier.{index}.{kind}"] = f"fc{i}.{kind}"
    return names


def _has_lrn(variant: str) -> bool:
    return any(layer.kind == "lrn" for layer in VARIANTS[variant].layers)


def layout_variants(layout: str) -> list[str]:
    return [v for v in VARIANTS if _has_lrn(v) == (layout == "lrn")]


def to_canonical(state: dict, path: str) -> tuple[dict, str]:
    """Rename a torchvision-style state_dict to canonical names; returns (weights, layout)."""
    conv_keys = {k for k in state if not k.startswith("classifier.")}
    prefixes = {p for p in CONV_PREFIXES if any(k.startswith(p) for k in conv_keys)}
    prefix = prefixes.pop() if len(prefixes) == 1 else WRITE_PREFIX
    for layout in CONV_INDICES:
        names = key_map(layout, prefix)
        if conv_keys <= set(names) and conv_keys:
            break
    else:
        layout = "plain"
        names = key_map(layout, prefix)
        if not conv_keys and state:  # classifier only: no conv layer to say which layout
            raise ValueError(f"{path}: has classifier tensors but no {prefix}N convolution tensors")
    unknown = next((k for k in state if k not in names), None)
    if unknown is not None:
        raise ValueError(f"{path}: key {unknown!r} is not in torchvision's AlexNet layout (convolutions at "
                         f"features.{{0,3,6,8,10}}, or features.{{0,4,8,10,12}} with LRN; "
                         f"classifier.{{1,4,6}})")
    return {names[k]: v for k, v in state.items()}, layout


def load(path: str, variant: str | None = None, input_size: int | None = None,
         state: dict | None = None) -> tuple[Spec, dict]:
    state = read_state_dict(path) if state is None else state
    weights, layout = to_canonical(state, path)
    candidates = layout_variants(layout) if variant is None else None
    spec = resolve_spec({k: v.shape for k, v in weights.items()}, path, variant=variant,
                        input_size=input_size, candidates=candidates)
    return finish(spec, weights, path)


def save(path: str, spec: Spec, weights: dict) -> None:
    layout = "lrn" if _has_lrn(spec.variant) else "plain"
    canonical_to_key = {name: key for key, name in key_map(layout).items()}
    save_state_dict(path, {canonical_to_key[name]: weights[name] for name in spec.weight_shapes()})


def claims(path: str) -> bool:
    return path.endswith((".pt", ".pth"))


def read_preprocessing(path: str, spec: Spec, **_):
    """A state_dict records nothing; torchvision's checkpoints (and the one-column re-implementations that copy
    its layout) were trained on its RGB 0-1 mean/std input."""
    return prep.convention("torchvision", spec, prep.TORCHVISION_CONVENTION), "format"


# never guessed: a .pt/.pth guesses as torch, whose pick tells torchvision's keys
FORMAT = Format("torchvision", load, save, claims, sniff, frameworks=("torch",), holds="all", files=".pt, .pth",
                guessed=False, preprocessing=read_preprocessing)
