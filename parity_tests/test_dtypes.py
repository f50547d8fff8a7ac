"""Every engine in every dtype its registry record lists (`Engine.dtypes`): each layer against the float64
reference by that dtype's tolerance (parity_tests/core.py DTYPE_TOLERANCES), float16 LRN on raw 0-255 pixels, and
the dtype option's errors.

CI runs three configs that between them take the layers a dtype could break (groups, LRN before and after
the pool, Caffe's ceil pooling, asymmetric conv pads, overlapping adaptive bins) in float16, whose 5-bit exponent
is where a layer overflows, the paper net (every layer kind but the adaptive pool) in bfloat16, whose tolerance
is the widest, and in float64; `-m slow` runs every config of the suite in every dtype."""
import numpy as np
import pytest

from alexnet_parity.common import get_spec
from alexnet_parity.common.dtypes import DTYPES, check_dtype
from alexnet_parity.common.engines import compared
from alexnet_parity.parity_tests.core import CONFIGS, DTYPE_TOLERANCES, config_id, dtype_failures, run_parity
from alexnet_parity.parity_tests.reduced import lrn_half_figures

REDUCED_AND_64 = ("float64", "bfloat16", "float16")
IN_CI = {"float16": {"paper", "caffenet", "torchvision@256"},
         "bfloat16": {"paper"},
         "float64": {"paper"}}  # float64 checks formulas, not rounding: the paper net takes every layer kind there is


def builds(dtype) -> tuple[str, ...]:
    return tuple(n for n, e in compared().items() if e.available() and dtype in e.dtypes)


def dtype_cases():
    for variant, overrides in CONFIGS:
        label = config_id(variant, overrides)
        for dtype in REDUCED_AND_64:
            marks = () if label in IN_CI[dtype] else (pytest.mark.slow,)
            yield pytest.param(variant, overrides, dtype, id=f"{label}-{dtype}", marks=marks)


@pytest.mark.parametrize("variant,overrides,dtype", list(dtype_cases()))
def test_every_layer_within_the_dtype_tolerance(variant, overrides, dtype):
    frameworks = builds(dtype)
    if not frameworks:
        pytest.skip(f"no installed engine builds {dtype}")
    result = run_parity(variant, overrides, frameworks=frameworks, dtype=dtype)
    assert set(result.vs_reference) == set(frameworks), result.errors
    bad = dtype_failures(result)
    assert not bad, f"{result.id}: " + "; ".join(bad[:10])
    if dtype != "float64":  # it really ran in reduced precision: float32 would be ~1e-6 off
        assert all(max(t.values()) > 10 * DTYPE_TOLERANCES["float32"][0] for t in result.vs_reference.values())


def test_the_tolerances_keep_the_issues_bars():
    """1e-2 relative on the logits for bfloat16 (HF's bar), 5e-3 for float16; float64 the strict check."""
    assert DTYPE_TOLERANCES["bfloat16"][1] <= 1e-2 and DTYPE_TOLERANCES["float16"][1] <= 5e-3
    assert max(DTYPE_TOLERANCES["float64"]) <= 1e-10


def test_float16_lrn_does_not_overflow_on_pixels():
    """norm1 gets raw 0-255 pixels: the naive float16 sum of squares is inf (its LRN off by ~100%), each engine's
    float16 LRN, summing in float32, is within float16 rounding (2^-11 ~ 4.9e-4) of the float64 reference."""
    figures = lrn_half_figures()
    assert figures["input max"] == 255 and figures["naive sum inf"] > 0.1 and not figures["naive norm1 error"] < 0.5
    assert set(figures["engines"]) == set(builds("float16"))
    for name, f in figures["engines"].items():
        assert f["norm1 finite"] and f["norm1 error"] < 1e-3, (name, f)


@pytest.mark.parametrize("framework", [n for n, e in compared().items() if len(e.dtypes) > 1])
def test_an_unknown_dtype_is_a_one_line_error_naming_the_option(framework):
    engine = compared()[framework]
    if not engine.available():
        pytest.skip(f"{framework} is not installed")
    with pytest.raises(ValueError, match=r"^dtype 'int8' is not one of float32, float64, bfloat16, float16$"):
        engine.built_weights(get_spec("torchvision"), dtype="int8")
    refused = [d for d in DTYPES if d not in engine.dtypes]
    for dtype in refused:  # what the record leaves out, build_model refuses in one line naming the dtype
        with pytest.raises(ValueError, match=f"^dtype '{dtype}': .*") as caught:
            engine.built_weights(get_spec("torchvision"), dtype=dtype)
        assert "\n" not in str(caught.value)
        with pytest.raises(ValueError, match=f"^dtype '{dtype}': {framework} builds "):
            engine.run_activations(get_spec("torchvision"), {}, np.zeros((1, 3, 224, 224), np.float32), dtype=dtype)


def test_dtype_names():
    assert [check_dtype(d) for d in DTYPES] == list(DTYPES)
    assert check_dtype(np.dtype("float16")) == "float16"
    for engine in compared().values():
        assert "float32" in engine.dtypes and set(engine.dtypes) <= set(DTYPES), engine.name
