"""The preprocessing the weights expect travels with them: a caffemodel means Caffe's BGR 0-255 minus the mean,
a torchvision .pth RGB 0-1 mean/std, and each converted file records what its source meant, so `alexnet
predict` feeds the weights the same input whatever file they came through. One small classifier (single-column
at its smallest input, whose own default is RGB 0-1 mean/std, so the Caffe convention must travel to be used),
lively weights drawn from a seed, one generated image; the expected classes come from the float64 reference
on input preprocessed here by hand."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from alexnet_parity import weights_convert as wc
from alexnet_parity.alexnet_cli import main as cli
from alexnet_parity.common import VARIANTS, get_spec, reference_forward
from alexnet_parity.weights_convert import caffe
from alexnet_parity.weights_convert import preprocessing as prep

SPEC = get_spec("single-column", input_size=67, num_classes=100)  # 21.6 M parameters, 86 MB files
CAFFE_MEAN = np.array([104.00699, 116.66877, 122.67891])  # BVLC's, B G R (DESIGN.md)
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def lively(spec, seed: int) -> dict[str, np.ndarray]:
    """He-scaled weights and small random biases: every layer's activations stay alive, so the classes apart."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, shape in spec.weight_shapes().items():
        fan_in = int(np.prod(shape[1:])) if name.endswith(".weight") else 1
        w[name] = (rng.standard_normal(shape) * (np.sqrt(2.0 / fan_in) if fan_in > 1 else 0.1)).astype(np.float32)
    return w


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A Caffe-layout file (no prototxt beside it: all it says is that it is a caffemodel) and an image."""
    folder = tmp_path_factory.mktemp("pre")
    weights = lively(SPEC, seed=7)
    wc.save(folder / "net.caffemodel", SPEC, weights)
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 255, 90)
    image = np.stack([np.add.outer(np.zeros(70), ramp), np.add.outer(ramp[:70], np.zeros(90)),
                      rng.uniform(0, 255, (70, 90))], axis=-1).astype(np.uint8)  # R, G, B each its own pattern
    Image.fromarray(image).save(folder / "image.png")
    return folder, weights


def hand_input(image_path, order: str, scale: float, mean, std, crop: int = 227) -> np.ndarray:
    """torchvision's Resize(256 * 67 / crop: 76 for Caffe's 227 of 256) + CenterCrop(67) by hand, then the
    channel order and the affine normalisation: float64 (1, 3, 67, 67)."""
    img = Image.open(image_path).convert("RGB")
    w, h = img.size
    base = round(256 * SPEC.input_size / crop)
    size = (int(base * w / h), base) if h <= w else (base, int(base * h / w))
    x = np.asarray(img.resize(size, Image.BILINEAR), np.float64)
    top, left = round((x.shape[0] - 67) / 2), round((x.shape[1] - 67) / 2)
    x = x[top:top + 67, left:left + 67]
    if order == "BGR":
        x = x[..., ::-1]
    x = (x * scale / 255.0 - np.asarray(mean)) / np.asarray(std)
    return x.transpose(2, 0, 1)[None]


def top5_of(weights, x) -> list[int]:
    return [int(c) for c in np.argsort(-reference_forward(SPEC, weights, x)["fc8"][0], kind="stable")[:5]]


def predicted(out: str) -> list[int]:
    return [int(line.split()[-1]) for line in out.strip().splitlines()]


def predict(made, weights_path, *extra) -> tuple[list[int], str]:
    folder, _ = made
    code, out, err = run("predict", folder / "image.png", "--weights", weights_path, "--framework", "torch", *extra)
    assert code == 0, err
    return predicted(out), err


def test_caffe_file_and_its_canonical_conversion_predict_alike_and_dropping_it_is_wrong(made, tmp_path):
    folder, weights = made
    want = top5_of(weights, hand_input(folder / "image.png", "BGR", 255.0, CAFFE_MEAN, (1, 1, 1)))
    variant_pre = top5_of(weights, hand_input(folder / "image.png", "RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD))
    assert want != variant_pre, "the image does not tell the two preprocessings apart"

    via_caffe, err = predict(made, folder / "net.caffemodel")
    assert via_caffe == want and "BGR 0-255" in err and "Caffe's convention" in err, err

    canonical = tmp_path / "net.safetensors"
    code, _, err = run("convert", folder / "net.caffemodel", canonical)
    assert code == 0, err
    assert wc.preprocessing_of(canonical, SPEC) == (prep.convention("caffe", SPEC, prep.CAFFE_CONVENTION), "file")
    via_canonical, err = predict(made, canonical)
    assert via_canonical == want and "as the file records" in err

    dropped, err = predict(made, canonical, "--preprocessing", "variant")
    assert dropped == variant_pre != want and "RGB 0-1" in err


def test_a_torchvision_pth_means_rgb_mean_std_through_a_caffemodel_and_its_deploy_prototxt(made, tmp_path):
    folder, weights = made
    pth = tmp_path / "net.pth"
    wc.save(pth, SPEC, weights, fmt="torchvision")
    torchvision_pre = prep.convention("torchvision", SPEC, prep.TORCHVISION_CONVENTION)
    assert wc.preprocessing_of(pth, SPEC, "torchvision") == (torchvision_pre, "format")

    dst = tmp_path / "out.caffemodel"
    code, _, err = run("convert", pth, dst, "--from", "torchvision")
    assert code == 0, err
    deploy = tmp_path / "out.prototxt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pth", "out.caffemodel", "out.prototxt"]
    text = deploy.read_text()
    assert wc.load(dst, prototxt=str(deploy))[0] == SPEC  # Caffe's text net, read by the caffe reader, agrees
    assert text.count('type: "Convolution"') == 5 and 'type: "Softmax"' in text and "dim: 67" in text
    assert wc.preprocessing_of(dst, SPEC) == (torchvision_pre, "file")
    # torchvision's 224 of 256: at 67 the image is resized to 77, not the 76 of Caffe's (and the variant's) 227
    rgb = top5_of(weights, hand_input(folder / "image.png", "RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD, crop=224))
    assert predict(made, dst)[0] == rgb

    deploy.unlink()  # a bare caffemodel: Caffe's own convention again
    assert wc.preprocessing_of(dst, SPEC)[0].color_order == "BGR"


def test_a_prototxt_name_holding_something_else_refuses_the_conversion_before_writing(made, tmp_path):
    folder, _ = made
    (tmp_path / "out.prototxt").write_text("my notes\n")
    code, _, err = run("convert", folder / "net.caffemodel", tmp_path / "out.caffemodel")
    assert code == 2 and "out.prototxt: exists and is not a Caffe prototxt" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.prototxt"]
    assert (tmp_path / "out.prototxt").read_text() == "my notes\n"


def test_every_format_with_metadata_records_what_it_was_given(tmp_path):
    spec = get_spec("caffe", include_top=False)  # 3.7 M parameters
    weights = lively(spec, seed=0)
    pre = prep.convention("torchvision", spec, "test: RGB on a caffe net")
    formats = [("canonical", "x.safetensors"), ("hub", "x-hub"), ("caffe", "x.caffemodel")]
    formats += [(f, n) for f, n in (("onnx", "x.onnx"), ("keras", "x.weights.h5"))
                if all(__import__("importlib").util.find_spec(m) for m in wc.get_format(f).frameworks)]
    for fmt, name in formats:
        options = {"deploy": True} if fmt == "caffe" else {}
        wc.save(tmp_path / name, spec, weights, fmt=fmt, preprocessing=pre, **options)
        assert wc.preprocessing_of(tmp_path / name, spec, fmt) == (pre, "file"), fmt
    # a format with no metadata: the variant's own
    wc.save(tmp_path / "x.pt", spec, weights, fmt="torch")
    assert wc.preprocessing_of(tmp_path / "x.pt", spec) == (VARIANTS["caffe"].preprocessing, "variant")


@pytest.mark.parametrize("bad,field", [({"color_order": "GRB"}, "color_order"), ({"std": [1, 0, 1]}, "std"),
                                       ({"crop": -3}, "crop"), ({"mean": [1, 2]}, "mean"),
                                       ({"mean_kind": "image"}, "mean_kind")])
def test_a_hostile_record_is_one_line_naming_the_file(tmp_path, bad, field):
    from safetensors.numpy import save_file

    record = {**prep.to_dict(VARIANTS["caffe"].preprocessing), **bad}
    path = tmp_path / "x.safetensors"
    save_file({"conv1.weight": np.zeros((1,), np.float32)}, str(path), metadata={"preprocessing": json.dumps(record)})
    with pytest.raises(ValueError) as err:
        wc.preprocessing_of(path, SPEC)
    assert str(path) in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


def test_deploy_text_has_each_layer_the_caffemodel_has():
    spec = get_spec("caffenet")
    text = caffe.deploy_text(spec, spec.preprocessing)
    names = [layer.name for layer in spec.layers if layer.kind not in ("flatten", "adaptive_avg_pool")]
    assert [line.split('"')[1] for line in text.splitlines() if line.startswith("layer")] == ["data", *names, "prob"]
