"""`alexnet bench` end to end on a tiny config. Timings are never asserted: the machine is shared and noisy."""
import json

import numpy as np
import pytest

from alexnet_parity.alexnet_cli.main import main
from alexnet_parity.common import get_spec


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """paper and torchvision at their smallest inputs, torch eager, batch 2, one timed step: exercises the
    worker, the LRN pair, the yardstick, the conversion, the cold starts, the JSON and the chart."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    d = tmp_path_factory.mktemp("bench")
    out, png = d / "bench.json", d / "bench.png"
    code = main(["bench", "paper", "torchvision", "--frameworks", "torch", "--paths", "eager", "--input-size", "min",
                 "--batch", "2", "--repeats", "1", "--warmup", "0", "--cold-runs", "1",
                 "--json", str(out), "--plot", str(png)])
    return code, json.loads(out.read_text()), png


def test_runs_end_to_end_with_every_section(tiny_run):
    code, report, _ = tiny_run
    assert code == 0 and report["errors"] == []
    assert {"command", "plan", "machine", "roof_gflops", "roofs", "results", "lrn_cost", "yardstick",
            "conversion", "cold_start", "load_average_before"} <= report.keys()
    assert report["plan"]["batch"] == 2 and report["plan"]["sizes"] == {"paper": 52, "torchvision": 63}


def test_roof_is_positive_and_measured_per_framework(tiny_run):
    _, report, _ = tiny_run
    assert {r["framework"] for r in report["roofs"]} == {"numpy", "torch"}
    assert report["roof_gflops"] == max(r["gflops"] for r in report["roofs"]) > 0


def test_each_model_result_is_complete(tiny_run):
    _, report, _ = tiny_run
    roles = {(r["variant"], r["role"]) for r in report["results"]}
    assert roles == {("paper", "main"), ("paper", "no_lrn"), ("torchvision", "main"), ("torchvision", "yardstick")}
    for r in report["results"]:
        assert len(r["seconds"]) == 1 and r["images_per_s"] > 0 and 0 < r["roof_fraction"]
        assert r["compile_s"] >= 0 and r["peak_mb"] > 0 and r["model_mb"] > 0
        assert r["others_cpu"] is None or 0 <= r["others_cpu"] <= 1
    paper = next(r for r in report["results"] if r["model"] == "paper")
    bare = next(r for r in report["results"] if r["role"] == "no_lrn")
    assert paper["macs"] == bare["macs"] == get_spec("paper", input_size=52).mac_count()  # LRN has no MACs


def test_lrn_pair_and_yardstick_are_reported(tiny_run):
    _, report, _ = tiny_run
    (lrn,) = report["lrn_cost"]
    assert lrn["variant"] == "paper" and np.isfinite(lrn["lrn_adds"])
    (yard,) = report["yardstick"]
    assert yard["ratio"] > 0
    # the report names the model it measured: the real one where torchvision imports, else the transcription
    assert yard["yardstick"] in ("torchvision.models.alexnet", "torchvision AlexNet (transcribed)")
    assert yard["max_abs_diff"] < 1e-3  # same weights in torchvision's class: the same network


def test_conversion_is_timed_or_says_why_not(tiny_run):
    _, report, _ = tiny_run
    (conv,) = report["conversion"]
    assert conv.get("error") or (conv["bit_exact"] and len(conv["convert_s"]) == len(conv["plain_s"]) == 3)


def test_cold_start_commands_import_no_framework(tiny_run):
    _, report, _ = tiny_run
    assert [c["command"] for c in report["cold_start"]] == ["alexnet summary paper", "alexnet --help"]
    for c in report["cold_start"]:
        assert c["frameworks_imported"] == [] and c["median_s"] > 0


def test_chart_is_a_png(tiny_run):
    *_, png = tiny_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,message", [
    (["--batch", "0"], "--batch must be at least 1"),
    (["--frameworks", "mxnet"], "unknown 'mxnet'"),
    (["--paths", "turbo"], "unknown 'turbo'"),
    (["--frameworks", "torch", "--paths", "jit"], "none of them belongs to torch"),
    (["alexnet2"], "unknown variant 'alexnet2'"),
    (["paper", "--input-size", "big"], "whole number or 'min'"),
    (["paper", "--input-size", "32"], "smallest input size it takes is 52"),
    (["paper", "--tf32", "on"], "--tf32 applies to --device gpu only"),
    (["paper", "--mode", "train", "--frameworks", "onnxruntime"],
     "--mode train: onnxruntime has no train path (it times infer only)"),
])
def test_bad_options_give_one_line_error(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def _torch_sees_gpu() -> bool:
    torch = pytest.importorskip("torch")
    return torch.cuda.is_available()


GPU_TINY = ["bench", "paper", "--frameworks", "torch", "--paths", "eager", "--input-size", "min", "--batch", "2",
            "--repeats", "1", "--warmup", "0", "--cold-runs", "0", "--no-convert", "--device", "gpu"]


def test_gpu_run_without_a_gpu_says_so_and_fails(tmp_path, capsys):
    if _torch_sees_gpu():
        pytest.skip("this machine has a GPU: the GPU run is tested below")
    out = tmp_path / "bench.json"
    assert main([*GPU_TINY, "--json", str(out), "--plot", str(tmp_path / "bench.png")]) == 1
    printed = capsys.readouterr()
    assert "ERROR torch: RuntimeError: torch sees no GPU" in printed.out and "Traceback" not in printed.err
    assert "not drawn" in printed.out and not (tmp_path / "bench.png").exists()
    report = json.loads(out.read_text())
    assert report["results"] == [] and report["roofs"] == [] and report["machine"]["gpu"] is None


@pytest.mark.parametrize("tf32", ["off", "on"])
def test_gpu_run_measures_on_the_gpu(tmp_path, tf32):
    if not _torch_sees_gpu():
        pytest.skip("torch sees no GPU")
    out = tmp_path / "bench.json"
    assert main([*GPU_TINY, "--tf32", tf32, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["plan"]["tf32"] == tf32 and report["machine"]["gpu"]
    assert [r["n"] for r in report["roofs"]] == [8192] and "numpy" not in {r["framework"] for r in report["roofs"]}
    for r in report["results"]:  # memory from the GPU's allocator: the host RSS would not see the activations
        assert r["images_per_s"] > 0 and r["model_mb"] > 0 and r["peak_mb"] >= r["model_mb"]


def _plan_of(argv):
    import argparse

    from alexnet_parity.alexnet_cli import bench_cmd
    p = argparse.ArgumentParser()
    bench_cmd.add_arguments(p)
    return bench_cmd._plan(p.parse_args(argv))


def test_onnxruntime_is_in_the_default_inference_run_and_out_of_training():
    """ORT times inference beside the frameworks; --mode train, which it has no path for, leaves it out
    unasked (and refuses it asked: test_bad_options_give_one_line_error)."""
    assert "onnxruntime" in _plan_of([])["frameworks"] and "ort" in _plan_of([])["paths"]
    train = _plan_of(["--mode", "train"])
    assert "onnxruntime" not in train["frameworks"] and "ort" not in train["paths"] and train["frameworks"]


def test_onnxruntime_run_times_the_specs_export(tmp_path):
    """ONNX Runtime through the bench's worker: the spec's ONNX graph timed, its session counted as the
    first step's compile, and the ONNX conversion checked bit-exact. 27 s on a loaded 2-core machine (19 s CPU)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    assert main(["bench", "paper", "--frameworks", "onnxruntime", "--input-size", "min", "--batch", "2",
                 "--repeats", "1", "--warmup", "0", "--cold-runs", "0", "--lrn", "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == [] and {r["framework"] for r in report["roofs"]} == {"numpy", "onnxruntime"}
    assert [(r["framework"], r["path"], r["role"]) for r in report["results"]] == [("onnxruntime", "ort", "main")]
    for r in report["results"]:
        assert r["images_per_s"] > 0 and r["first_step_s"] > 0 and r["model_mb"] > 0
    (conv,) = report["conversion"]
    assert conv["bit_exact"] and conv["convert_label"] == "weights_convert canonical -> onnx"


# train: -m slow (~35 s); CI times inference, and tests/test_keras_backends.py proves a training step on each backend
@pytest.mark.parametrize("mode", ["infer", pytest.param("train", marks=pytest.mark.slow)])
def test_keras_runs_on_jax_and_torch(tmp_path, mode):
    """tf_impl's one Keras model timed on Keras's JAX backend (jax.jit of the stateless call) and its torch
    backend (eager), each in a worker whose KERAS_BACKEND the engine names: an img/s row for each, the LRN pair
    (a model rebuilt without its LRN layers) in inference, and each backend's framework beside keras in the
    versions. ~40 s on a loaded 2-core machine for both modes."""
    for module in ("keras", "jax", "torch"):
        pytest.importorskip(module)
    out = tmp_path / "bench.json"
    assert main(["bench", "paper", "--frameworks", "keras-jax,keras-torch", "--mode", mode, "--input-size", "min",
                 "--batch", "2", "--repeats", "1", "--warmup", "0", "--cold-runs", "0", "--no-convert",
                 "--lrn", "first" if mode == "infer" else "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == [] and {r["framework"] for r in report["roofs"]} == {"numpy", "keras-jax",
                                                                                  "keras-torch"}
    rows = {(r["framework"], r["path"], r["role"]) for r in report["results"]}
    roles = ("main", "no_lrn") if mode == "infer" else ("main",)
    assert rows == {(fw, path, role) for fw, path in (("keras-jax", "jit"), ("keras-torch", "eager")) for role in roles}
    for r in report["results"]:
        assert r["images_per_s"] > 0 and r["model_mb"] > 0 and r["macs"] > 0
    assert set(report["versions"]["keras-jax"]) == {"keras", "jax"}
    assert set(report["versions"]["keras-torch"]) == {"keras", "torch"}
    assert all(report["threads"][fw] >= 1 for fw in ("keras-jax", "keras-torch"))
