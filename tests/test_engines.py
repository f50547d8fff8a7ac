"""The engine registry (common.engines): reading it imports no framework, and an engine registered from
outside (here a toy around the numpy reference, defined in this file) shows up in every consumer -- `alexnet
parity`, `alexnet bench --frameworks`, `alexnet convert --verify`, the parity harness -- with no edit to any of
them."""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec, reference_forward
from alexnet_parity.common import engines as registry
from alexnet_parity.common.engines import BenchPath, Engine

FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "jaxlib", "flax", "optax")


def _toy_activations(spec, weights, x_nchw, device="cpu"):
    """The reference's float64 forward, rounded to float32 as a framework would hand it back."""
    return {name: a.astype(np.float32) for name, a in reference_forward(spec, weights, x_nchw).items()}


class ToyRunner:  # what bench_cmd's worker would drive; the toy lists it so that bench offers the engine
    def __init__(self, device="cpu", tf32=None):
        self.device = device


TOY = Engine(name="toy", package=types.SimpleNamespace(run_activations=_toy_activations, devices=lambda: ["cpu"]),
             formats=("canonical",), suffix=".safetensors", color="tab:purple",
             bench_paths=(BenchPath("numpy", "the toy's numpy forward", "#756bb1"),), runner=ToyRunner)


@pytest.fixture
def toy():
    registry.register(TOY)  # the registration line: nothing else of the project changes
    try:
        yield TOY
    finally:
        registry.unregister(TOY.name)


def test_reading_the_registry_imports_no_framework():
    code = ("import sys\n"
            "from alexnet_parity.common.engines import engines, benchable, trainable, engine_for_format\n"
            "seen = [(n, e.available(), e.color, e.layout, [p.name for p in e.bench_paths]) for n, e in engines().items()]\n"
            "assert [n for n, *_ in seen][-1] == 'reference', seen\n"
            "assert list(benchable()) and list(trainable()) and engine_for_format('caffe').oracle\n"
            f"bad = [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_engine_package_names_its_api_lazily():
    """`from alexnet_parity.torch_impl import build_model` still works: the package's __init__ imports the
    defining submodule (and the framework) only then."""
    pytest.importorskip("torch")
    code = ("import sys\n"
            "import alexnet_parity.torch_impl as ti\n"
            "assert 'torch' not in sys.modules\n"
            "from alexnet_parity.torch_impl import build_model, export_weights\n"
            "assert 'torch' in sys.modules and build_model.__module__ == 'alexnet_parity.torch_impl.model'\n"
            "assert 'run_activations' in dir(ti) and ti.run_activations.__module__.endswith('.run')\n"
            "try:\n    ti.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_format_is_verified_by_its_engine():
    """What `convert --verify` runs: the engine whose native formats hold the format, else the reference."""
    by_format = {fmt: registry.engine_for_format(fmt).name
                 for fmt in ("canonical", "torch", "torchvision", "keras", "flax", "caffe", "slim")}
    assert by_format == {"canonical": "reference", "torch": "torch", "torchvision": "torch", "keras": "keras",
                         "flax": "flax", "caffe": "reference", "slim": "keras"}


def test_a_name_registers_once(toy):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        registry.register(TOY)
    with pytest.raises(ValueError, match="unknown --framework 'mxnet'; choose one of: .*toy"):
        registry.get_engine("mxnet")


def test_a_twin_is_an_engine_that_runs_an_earlier_ones_package(toy):
    from alexnet_parity.parity_tests.core import twin_of
    twins = {name: twin_of(name) for name in registry.compared()}
    assert twins == {name: "keras" if name in ("keras-jax", "keras-torch") else None for name in twins}
    twin = Engine(name="toy-twin", package=TOY.package)
    registry.register(twin)
    try:
        assert twin_of("toy-twin") == "toy" and twin_of("toy") is None
    finally:
        registry.unregister(twin.name)


def test_the_process_keras_backend_is_the_imported_one_else_the_one_named(monkeypatch):
    """Before Keras is imported, KERAS_BACKEND decides which Keras engine runs here: a test touching keras-jax
    first must not claim a process whose Keras is meant to run TensorFlow (the order-dependent failure of the
    Keras broken-backward tests)."""
    keras_tf, keras_jax = registry.get_engine("keras"), registry.get_engine("keras-jax")
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert keras_tf.runs_here() and not keras_jax.runs_here()
    monkeypatch.delenv("KERAS_BACKEND")
    assert keras_tf.runs_here() and keras_jax.runs_here()  # unclaimed: the first to compute claims it
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "jax")))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # an imported Keras outranks the variable
    assert keras_jax.runs_here() and not keras_tf.runs_here()


def test_toy_appears_in_the_parity_harness(toy):
    from alexnet_parity.parity_tests import test_parity
    from alexnet_parity.parity_tests.core import failures, run_parity

    assert "toy" in test_parity.available()  # so the suite's cross-framework test runs it
    result = run_parity("torchvision", {"input_size": 63, "num_classes": 2}, frameworks=("toy", "reference"))
    assert set(result.vs_reference) == {"toy", "reference"} and list(result.pairs) == ["toy~reference"]
    assert 0 < max(result.vs_reference["toy"].values()) < 1e-6  # float32 rounding of the reference itself
    assert max(result.vs_reference["reference"].values()) == 0 and not failures(result)


def test_toy_appears_in_alexnet_parity(toy, capsys, tmp_path):
    code = main(["parity", "torchvision", "--input-size", "63", "--num-classes", "2", "--frameworks", "toy",
                 "--convert", "--plot", str(tmp_path / "p.png")])
    out, err = capsys.readouterr()
    assert code == 0, err
    head = next(line for line in out.splitlines() if line.startswith("variant"))
    assert head.split() == ["variant", "device", "toy", "vs", "ref", "worst", "layer"]
    assert "weights through weights.safetensors: bit-identical" in err  # its own format, canonical
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"  # drawn in its own colour
    with pytest.raises(SystemExit):
        main(["parity", "--help"])
    assert "toy" in capsys.readouterr().out


def test_toy_appears_in_bench_frameworks(toy, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    unwrapped = "".join(help_text.split())  # argparse may wrap the list at a name's hyphen (keras-jax)
    assert f"subsetof{','.join(registry.benchable())}" in unwrapped and "numpy: the toy's numpy forward" in help_text
    assert main(["bench", "--frameworks", "mxnet"]) == 2
    assert f"choose from {', '.join(registry.benchable())}" in capsys.readouterr().err
    assert main(["bench", "--frameworks", "toy", "--paths", "eager"]) == 2  # eager is torch's, not the toy's
    assert "none of them belongs to toy" in capsys.readouterr().err


def test_toy_appears_in_convert_verify(toy, capsys, tmp_path):
    from alexnet_parity import weights_convert
    from alexnet_parity.parity_tests.core import parity_weights

    spec = get_spec("torchvision", input_size=63, num_classes=2)
    src = tmp_path / "a.safetensors"
    weights_convert.save(src, spec, parity_weights(spec), fmt="canonical")
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "canonical    toy:" in capsys.readouterr().out
    assert main(["convert", str(src), str(tmp_path / "b.caffemodel"), "--verify", "-q"]) == 0
    assert "toy vs numpy reference: max relative error" in capsys.readouterr().out


def test_a_keras_file_loads_in_a_fresh_process(tmp_path):
    """tf_impl's names are lazy, so nothing registers its Keras layers until keras_fmt asks for them: a .keras
    file must still load in a process that has touched nothing else (it did not, before keras_fmt asked)."""
    pytest.importorskip("keras")
    from alexnet_parity import weights_convert
    from alexnet_parity.parity_tests.core import parity_weights

    spec = get_spec("torchvision", input_size=63, num_classes=2)
    weights_convert.save(tmp_path / "w.keras", spec, parity_weights(spec))
    code = ("import sys; from alexnet_parity import weights_convert as wc\n"
            "spec, w = wc.load(sys.argv[1]); print(spec.describe())")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.keras")], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == spec.describe(), done.stderr[-500:]
