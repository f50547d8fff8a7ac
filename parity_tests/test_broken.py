"""The suite catches the classic porting mistakes: each broken model below must fail it, at the layer at fault."""

import numpy as np
import pytest

from alexnet_parity.common import fc_rows_hwc_to_chw, get_spec
from alexnet_parity.common.engines import compared
from alexnet_parity.parity_tests.core import failures, parity_weights, run_parity, twin_of


def installed(framework):
    if not compared()[framework].available():
        pytest.skip(f"{framework} is not installed")


def nhwc() -> list[str]:
    """The engines whose flatten is H,W,C ordered: where fc6's rows must be permuted."""
    return [name for name, engine in compared().items() if engine.layout == "NHWC"]


def each(names):
    """An engine that runs another's model on another backend (core.twin_of) is -m slow here: the broken port is
    in the weights or the spec, which it reads with the same code as its twin."""
    return [pytest.param(n, marks=pytest.mark.slow) if twin_of(n) else n for n in names]


def first_failing_layer(result, who):
    bad = [layer for layer, err in result.vs_reference[who].items() if not err <= 1e-5]
    return bad[0] if bad else None


def test_transposed_kernel_fails_at_that_layer():
    framework = next((name for name, engine in compared().items() if engine.available()), None)
    if framework is None:
        pytest.skip("no engine is installed")
    spec = get_spec("caffe")
    w = parity_weights(spec)
    broken = dict(w, **{"conv2.weight": np.ascontiguousarray(w["conv2.weight"].transpose(0, 1, 3, 2))})
    result = run_parity("caffe", device="cpu", frameworks=(framework,), weights_for={framework: broken})
    assert failures(result) and first_failing_layer(result, framework) == "conv2"
    assert result.vs_reference[framework]["conv2"] > 0.1


@pytest.mark.parametrize("framework", each(nhwc()))
def test_fc6_rows_in_hwc_order_fails_at_fc6(framework):
    installed(framework)
    spec = get_spec("torchvision")
    w = parity_weights(spec)
    # A port that copies the canonical (out, C*H*W) matrix as its NHWC Dense kernel, without permuting rows,
    # behaves exactly like a correct port given these canonical weights:
    chw = spec.layer("flatten").in_shape
    naive = dict(w, **{"fc6.weight": fc_rows_hwc_to_chw(np.ascontiguousarray(w["fc6.weight"].T), chw)})
    result = run_parity("torchvision", device="cpu", frameworks=(framework,), weights_for={framework: naive})
    assert failures(result) and first_failing_layer(result, framework) == "fc6"
    assert result.vs_reference[framework]["fc6"] > 0.1


@pytest.mark.parametrize("framework", each(compared()))
def test_lrn_alpha_not_divided_by_n_fails_at_norm1(framework):
    installed(framework)
    spec = get_spec("caffe")
    wrong = spec.replace_layers("lrn", alpha_over_n=False)
    result = run_parity("caffe", device="cpu", frameworks=(framework,), spec_for={framework: wrong})
    assert failures(result) and first_failing_layer(result, framework) == "norm1"
