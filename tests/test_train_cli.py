"""alexnet train, eval and predict as a user runs them, on tiny configs (the smallest input a variant takes, a
few dozen synthetic images): the files a run writes, the loss falling, resume == uninterrupted bit for bit,
top-1/top-5 against a hand computation on the float64 reference, class names, one-line errors."""
from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from alexnet_parity.alexnet_cli import main as cli
from alexnet_parity.common import get_spec, init_weights, reference_forward
from alexnet_parity.training import Batches, Synthetic
from alexnet_parity.training.loop import CHECKPOINT, COLUMNS, METRICS_CSV, METRICS_JSON, METRICS_PNG, MODEL

# the easy set: 2 classes (horizontal vs vertical gratings), 48 images, 36 to train in 6 steps of 6. slim-v2
# (Glorot convs, no LRN) at its smallest input learns it in a dozen steps at lr 0.01; the paper's init (biases 1,
# N(0, 0.01)) needs ImageNet's 1000 classes and many more steps to settle.
TINY = ["--variant", "slim-v2", "--input-size", "67", "--num-classes", "2", "--data", "synthetic:48",
        "--val-fraction", "0.25", "--batch", "6", "--lr", "0.01", "--seed", "0"]
EPOCHS = 3


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def tensors(path) -> dict[str, np.ndarray]:
    with safe_open(str(path), framework="numpy") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def metrics(out) -> list[dict]:
    with open(out / METRICS_CSV) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch") / "run"
    code, stdout, stderr = run("train", "--framework", "torch", *TINY, "--epochs", EPOCHS, "--out", out)
    assert code == 0, stderr
    return out, stdout, stderr


# --- train ----------------------------------------------------------------------------------------------

def test_train_writes_checkpoint_metrics_and_plot(torch_run):
    out, stdout, stderr = torch_run
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    with open(out / METRICS_CSV) as f:
        assert f.readline().strip().split(",") == list(COLUMNS)
    doc = json.loads((out / METRICS_JSON).read_text())
    assert doc["config"]["framework"] == "torch" and doc["config"]["num_classes"] == 2
    for row, logged in zip(rows, doc["epochs"]):
        assert row == pytest.approx({k: float(v) for k, v in logged.items()})
        assert 0 <= row["val_top1"] <= row["val_top5"] <= 1 and row["img_per_s"] > 0 and row["lr"] > 0
    assert (out / METRICS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the weights file is canonical: alexnet convert / eval read it, and it holds the checkpoint's weights
    from alexnet_parity import weights_convert
    spec, weights = weights_convert.load(str(out / MODEL))
    assert spec == get_spec("slim-v2", input_size=67, num_classes=2)
    ckpt = tensors(out / CHECKPOINT)
    for name, w in weights.items():
        np.testing.assert_array_equal(ckpt[name], w)
        assert np.any(ckpt["velocity/" + name] != 0), name
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    # progress on stderr: step/total, loss, img/s; the summary on stdout
    assert "6/6" in stderr and "loss" in stderr and "img/s" in stderr
    assert "val top-1" in stdout and str(out / MODEL) in stdout


def test_loss_falls_on_an_easy_set(torch_run):
    rows = metrics(torch_run[0])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_resume_equals_uninterrupted(torch_run, tmp_path):
    """1 epoch; resume and stop mid-epoch 2 (--max-steps); resume to the end: the same weights, velocity
    and losses as the run that never stopped."""
    out = tmp_path / "resumed"
    assert run("train", "--framework", "torch", *TINY, "--epochs", 1, "--out", out)[0] == 0
    code, _, err = run("train", "--resume", "--out", out, "--epochs", EPOCHS, "--max-steps", 8)
    assert code == 0 and "stopped after 8 steps (epoch 2, step 2)" in err
    code, _, err = run("train", "--resume", "--out", out, "--epochs", EPOCHS)
    assert code == 0, err
    straight, resumed = tensors(torch_run[0] / CHECKPOINT), tensors(out / CHECKPOINT)
    assert straight.keys() == resumed.keys()
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    for a, b in zip(metrics(torch_run[0]), metrics(out), strict=True):
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_resume_equals_uninterrupted_in_an_nhwc_framework(tmp_path):
    """Flax hands back fc6 (and its velocity) as a transposed view of its NHWC kernel: the checkpoint must
    store the canonical order, not the view's memory."""
    pytest.importorskip("jax")
    flax = ["train", "--framework", "flax", *TINY, "--epochs", 1]
    assert run(*flax, "--max-steps", 2, "--out", tmp_path / "straight")[0] == 0
    assert run(*flax, "--max-steps", 1, "--out", tmp_path / "resumed")[0] == 0
    assert run("train", "--resume", "--out", tmp_path / "resumed", "--max-steps", 2)[0] == 0
    straight, resumed = tensors(tmp_path / "straight" / CHECKPOINT), tensors(tmp_path / "resumed" / CHECKPOINT)
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


def test_checkpoint_round_trips_transposed_views(tmp_path):
    from alexnet_parity.training.loop import load_checkpoint, save_checkpoint
    spec = get_spec("paper", input_size=52, num_classes=3)
    weights = init_weights(spec, seed=0)
    views = {name: np.asfortranarray(w) for name, w in weights.items()}  # same values, other memory order
    velocity = {name: -w for name, w in views.items()}
    from alexnet_parity.training.loop import RunConfig
    import dataclasses
    state = {"epoch": 1, "step": 0, "global_step": 3, "schedule": {"lr": 0.01, "best": 0.5, "bad_epochs": 0},
             "partial": {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0}, "history": [],
             "config": dataclasses.asdict(RunConfig(variant="paper", input_size=52, num_classes=3))}
    save_checkpoint(tmp_path / "c.safetensors", spec, views, velocity, state)
    spec2, w2, v2, state2 = load_checkpoint(tmp_path / "c.safetensors")
    assert spec2 == spec and state2 == state
    for name in weights:
        np.testing.assert_array_equal(w2[name], weights[name])
        np.testing.assert_array_equal(v2[name], -weights[name])


def test_resume_refuses_other_settings_and_train_refuses_to_overwrite(torch_run):
    out = torch_run[0]
    code, _, err = run("train", "--resume", "--out", out, "--batch", 5)
    assert code == 2 and "--batch 5 differs from the checkpoint's 6" in err and err.count("\n") == 1
    code, _, err = run("train", "--framework", "torch", *TINY, "--out", out)
    assert code == 2 and "--resume" in err and err.count("\n") == 1


@pytest.mark.parametrize("framework,module", [("keras", "tensorflow"), ("flax", "jax")])
def test_train_in_keras_and_flax(tmp_path, framework, module):
    pytest.importorskip(module)
    out = tmp_path / framework
    code, _, err = run("train", "--framework", framework, *TINY, "--epochs", 1, "--out", out)
    assert code == 0, err
    (row,) = metrics(out)
    assert np.isfinite([row["train_loss"], row["val_loss"]]).all() and row["train_loss"] > 0
    assert (out / METRICS_PNG).is_file()
    assert json.loads((out / METRICS_JSON).read_text())["config"]["framework"] == framework
    assert set(tensors(out / MODEL)) == set(get_spec("slim-v2", input_size=67, num_classes=2).weight_shapes())


# --- eval -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """torchvision at its smallest input, 10 classes, fc8 scaled so that logits are far apart (no ties a
    float32 rounding could flip), saved as a canonical file."""
    from alexnet_parity import weights_convert
    spec = get_spec("torchvision", input_size=63, num_classes=10)
    weights = init_weights(spec, seed=1)
    weights["fc8.weight"] = weights["fc8.weight"] * 300
    path = tmp_path_factory.mktemp("eval") / "tv.safetensors"
    weights_convert.save(str(path), spec, weights, fmt="canonical")
    return spec, weights, path


def hand_topk(logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    order = np.argsort(-logits, axis=1)
    gaps = np.diff(-np.sort(-logits, axis=1)[:, :6], axis=1)
    assert np.abs(gaps).min() > 1e-4 * np.abs(logits).max(), "near-tie: a float32 rounding could flip it"
    return int((order[:, 0] == labels).sum()), int((order[:, :5] == labels[:, None]).any(axis=1).sum())


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_eval_top1_top5_match_a_hand_computation(classifier, ten_crop):
    spec, weights, path = classifier
    n = 12
    code, out, err = run("eval", "--weights", path, "--data", f"synthetic:{n}", "--framework", "torch",
                         "--batch", 5, *(["--ten-crop"] if ten_crop else []))
    assert code == 0, err
    # eval's synthetic images: seed 1, apart from training's seed 0
    x, y = Batches(Synthetic(num_classes=10, count=n, seed=1), spec, n, train=False, ten_crop=ten_crop)[0]
    logits = reference_forward(spec, weights, x.reshape(-1, *x.shape[-3:]).astype(np.float64))["fc8"]
    if ten_crop:  # the paper: the softmax of the ten views averaged
        logits = np.log(softmax(logits.reshape(n, 10, -1)).mean(axis=1))
    top1, top5 = hand_topk(logits, y)
    assert f"top-1 {top1 / n:.4f}  ({top1}/{n})" in out
    assert f"top-5 {top5 / n:.4f}  ({top5}/{n})" in out


# --- predict --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "grating.png"
    Image.fromarray(Synthetic(num_classes=4, count=4, size=(64, 80)).image(1)).save(path)
    return path


def test_predict_preprocesses_as_the_variant(image_file):
    from alexnet_parity.alexnet_cli.predict_cmd import preprocess
    img = np.asarray(Image.open(image_file).convert("RGB"))
    spec = get_spec("caffe", input_size=55)  # base 62: 64x80 -> 62x77, centre 55x55 crop at (4, 11)
    resized = np.asarray(Image.fromarray(img).resize((77, 62), Image.BILINEAR)).astype(np.float32)
    crop = resized[4:59, 11:66]
    want = (crop[..., ::-1] - np.float32([104.00699, 116.66877, 122.67891])).transpose(2, 0, 1)  # BGR
    np.testing.assert_allclose(preprocess(str(image_file), spec)[0], want, atol=1e-4)


@pytest.mark.parametrize("classes", [1000, 4])
def test_predict_names_imagenet_classes_or_prints_indices(tmp_path, image_file, classes):
    from alexnet_parity import weights_convert
    from alexnet_parity.alexnet_cli.predict_cmd import imagenet_classes, preprocess
    spec = get_spec("paper", input_size=52, num_classes=classes)
    weights = init_weights(spec, seed=2)
    weights["fc8.weight"] = weights["fc8.weight"] * 100
    path = tmp_path / "w.safetensors"
    weights_convert.save(str(path), spec, weights, fmt="canonical")
    code, out, err = run("predict", image_file, "--weights", path, "--framework", "torch")
    assert code == 0, err
    logits = reference_forward(spec, weights, preprocess(str(image_file), spec).astype(np.float64))["fc8"][0]
    top = np.argsort(-logits)[:5]
    lines = out.strip().splitlines()
    assert len(lines) == min(5, classes)
    probs = [float(line.split()[1]) for line in lines]
    assert probs == sorted(probs, reverse=True) and probs[0] == pytest.approx(softmax(logits).max(), abs=1e-4)
    names = imagenet_classes()
    for line, c in zip(lines, top):
        assert line.endswith(f"{c:>3} {names[c]}" if classes == 1000 else f"class {c}"), line


def test_imagenet_class_names():
    from alexnet_parity.alexnet_cli.predict_cmd import imagenet_classes
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[258] == "Samoyed" and names[999] == "toilet_tissue"


# --- errors ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    from alexnet_parity import weights_convert
    spec = get_spec("paper", input_size=52, num_classes=4)
    path = tmp_path_factory.mktemp("w") / "paper.safetensors"
    weights_convert.save(str(path), spec, init_weights(spec, seed=0), fmt="canonical")
    (path.parent / "notes.txt").write_text("not an image")
    return path


@pytest.mark.parametrize("argv,says", [
    (["train", "--data", "/no/such/dir"], "--data /no/such/dir"),
    (["train", "--data", "synthetic", "--framework", "mxnet"], "--framework 'mxnet'"),
    (["train", "--data", "synthetic", "--variant", "vgg"], "--variant 'vgg'"),
    (["train", "--data", "synthetic:x"], "synthetic:x"),
    (["train", "--data", "synthetic", "--epochs", "0"], "--epochs"),
    (["train", "--data", "synthetic", "--val-fraction", "1.5"], "--val-fraction"),
    (["train", "--data", "synthetic", "--input-size", "20"], "smallest input size"),
    (["train", "--data", "synthetic:8", "--batch", "64", "--framework", "torch"], "--batch 64"),
    (["train", "--resume", "--out", "{tmp}/nothing"], "--resume"),
    (["eval", "--weights", "{tmp}/missing.safetensors", "--data", "synthetic"], "missing.safetensors"),
    (["eval", "--weights", "{w}", "--data", "/no/such/dir"], "--data /no/such/dir"),
    (["eval", "--weights", "{tmp}/notes.txt", "--data", "synthetic"], "notes.txt"),
    (["predict", "{tmp}/missing.png", "--weights", "{w}"], "missing.png"),
    (["predict", "{tmp}/notes.txt", "--weights", "{w}"], "notes.txt"),
    (["predict", "{tmp}/notes.txt", "--weights", "{w}", "--top", "0"], "--top"),
])
def test_bad_input_is_a_one_line_error_with_status_2(small_weights, argv, says):
    tmp = small_weights.parent
    argv = [a.format(tmp=tmp, w=small_weights) for a in argv]
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"alexnet {argv[0]}: error:") and says in err, err
