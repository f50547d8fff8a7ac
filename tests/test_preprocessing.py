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
    with_image = prep.with_mean_image(prep.convention("caffe", spec, "test: a mean image"),
                                      np.full((3, 256, 256), 117.0, np.float32), "flat.npy")
    formats = [("canonical", "x.safetensors"), ("hub", "x-hub"), ("caffe", "x.caffemodel")]
    formats += [(f, n) for f, n in (("onnx", "x.onnx"), ("keras", "x.weights.h5"), ("keras", "x.keras"))
                if all(__import__("importlib").util.find_spec(m) for m in wc.get_format(f).frameworks)]
    for fmt, name in formats:
        options = {"deploy": True} if fmt == "caffe" else {}
        for recorded in (pre, with_image):
            wc.save(tmp_path / name, spec, weights, fmt=fmt, preprocessing=recorded, **options)
            assert wc.preprocessing_of(tmp_path / name, spec, fmt) == (recorded, "file"), fmt
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


# --- the mean image: Caffe's ilsvrc_2012_mean.binaryproto, subtracted after the resize, cut at the crop's offset

BASE = 76  # the single-column net at 67 is cropped from a 76x76 image (256 * 67 / 227), so its mean image is 3x76x76


def binaryproto(path, mean: np.ndarray) -> None:
    """A BlobProto as compute_image_mean writes one: num/channels/height/width (fields 1-4), packed float data (5)."""
    from alexnet_parity.weights_convert import protowire as pw

    chunks = []
    for number, dim in zip((1, 2, 3, 4), (1, *mean.shape)):
        chunks += pw.field_varint(number, dim)
    chunks += pw.field_packed_array(5, mean)
    path.write_bytes(b"".join(bytes(c) for c in chunks))


def varying_mean(seed: int) -> np.ndarray:
    """BVLC's channel means plus a strong pattern of its own per channel (B G R, 0-255): it varies across the image."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-80, 80, BASE)
    pattern = np.stack([np.add.outer(ramp, np.zeros(BASE)), np.add.outer(np.zeros(BASE), ramp),
                        rng.uniform(-80, 80, (BASE, BASE))])
    return (CAFFE_MEAN[:, None, None] + pattern).astype(np.float32)


def hand_input_mean_image(image_path, mean: np.ndarray) -> np.ndarray:
    """Short side to 76 (70x90 -> 76x97), minus the 76x76 mean image laid over the central square, then the
    centre 67x67 crop of both; BGR 0-255: float64 (1, 3, 67, 67)."""
    img = Image.open(image_path).convert("RGB")
    w, h = img.size
    size = (int(BASE * w / h), BASE) if h <= w else (BASE, int(BASE * h / w))
    x = np.asarray(img.resize(size, Image.BILINEAR), np.float64)[..., ::-1].transpose(2, 0, 1)
    frame = np.zeros_like(x)
    mt, ml = round((x.shape[1] - BASE) / 2), round((x.shape[2] - BASE) / 2)
    frame[:, mt:mt + BASE, ml:ml + BASE] = mean
    top, left = round((x.shape[1] - 67) / 2), round((x.shape[2] - 67) / 2)
    return (x - frame)[None, :, top:top + 67, left:left + 67]


def one_line_error(code, err, *needles):
    assert code == 2 and err.count("\n") == 1 and all(n in err for n in needles), (code, err)


def test_a_varying_mean_image_is_subtracted_the_caffe_way_and_a_constant_one_is_the_mean_pixel(made, tmp_path):
    folder, weights = made
    mean = varying_mean(seed=3)
    binaryproto(tmp_path / "mean.binaryproto", mean)
    with_image, err = predict(made, folder / "net.caffemodel", "--mean-image", tmp_path / "mean.binaryproto")
    assert with_image == top5_of(weights, hand_input_mean_image(folder / "image.png", mean))
    pixel, _ = predict(made, folder / "net.caffemodel")
    assert with_image != pixel, "the mean image does not change the top-5: the test tells nothing"
    digest = prep.mean_image_of(mean).sha256
    assert f"3x76x76 mean image sha256 {digest[:12]}" in err and "mean.binaryproto" in err, err

    np.save(tmp_path / "mean.npy", mean)  # the same image as .npy: the same digest, the same input
    assert predict(made, folder / "net.caffemodel", "--mean-image", tmp_path / "mean.npy")[0] == with_image

    flat = np.broadcast_to(CAFFE_MEAN.astype(np.float32)[:, None, None], (3, BASE, BASE))
    binaryproto(tmp_path / "flat.binaryproto", flat)
    assert predict(made, folder / "net.caffemodel", "--mean-image", tmp_path / "flat.binaryproto")[0] == pixel


def test_a_recorded_mean_image_travels_and_is_required_checked_or_explicitly_approximated(made, tmp_path):
    folder, weights = made
    mean, other = varying_mean(seed=3), varying_mean(seed=4)
    for name, array in (("mean.binaryproto", mean), ("other.binaryproto", other)):
        binaryproto(tmp_path / name, array)
    np.save(tmp_path / "small.npy", mean[:, :70, :70])
    canonical = tmp_path / "net.safetensors"
    code, _, err = run("convert", folder / "net.caffemodel", canonical, "--mean-image", tmp_path / "mean.binaryproto")
    assert code == 0, err
    pre = wc.preprocessing_of(canonical, SPEC)[0]
    assert pre.mean_image == prep.mean_image_of(mean) and pre.color_order == "BGR"
    assert prep.to_dict(pre)["mean_kind"] == "image" and prep.from_json(prep.to_json(pre), "x") == pre

    want = top5_of(weights, hand_input_mean_image(folder / "image.png", mean))
    assert predict(made, canonical, "--mean-image", tmp_path / "mean.binaryproto")[0] == want
    code, _, err = run("predict", folder / "image.png", "--weights", canonical, "--framework", "torch")
    one_line_error(code, err, "--mean-image FILE", "--mean-image pixel", prep.mean_image_of(mean).sha256)
    code, _, err = run("predict", folder / "image.png", "--weights", canonical, "--mean-image",
                       tmp_path / "other.binaryproto")
    one_line_error(code, err, "other.binaryproto", "sha256", "another mean image")
    code, _, err = run("predict", folder / "image.png", "--weights", canonical, "--mean-image", tmp_path / "small.npy")
    one_line_error(code, err, "small.npy", "3x70x70", "3x76x76")

    pixel, err = predict(made, canonical, "--mean-image", "pixel")  # asked for: the per-channel approximation
    assert "by --mean-image pixel" in err
    assert pixel == top5_of(weights, hand_input(folder / "image.png", "BGR", 255.0, mean.mean(axis=(1, 2)), (1, 1, 1)))

    code, _, err = run("eval", "--weights", canonical, "--data", "synthetic:4", "--framework", "torch")
    one_line_error(code, err, "--mean-image FILE")
    code, out, err = run("eval", "--weights", canonical, "--data", "synthetic:4", "--framework", "torch",
                         "--mean-image", tmp_path / "mean.binaryproto", "--ten-crop")
    assert code == 0 and "mean image" in err and "top-1" in out, err


@pytest.mark.parametrize("name,content,needle", [
    ("text.binaryproto", b"this is not a blob\n", "--mean-image"),
    ("empty.binaryproto", b"", "no data"),
    ("pickled.npy", None, "pickle"),
    ("zipped.npy", b"PK\x03\x04not an npz", "not a numpy .npy array"),
    ("huge.npy", b"huge", "more than it holds"),
    ("flat.npy", np.zeros((76, 76), np.float32), "shape 76x76"),
    ("nan.npy", np.full((3, 76, 76), np.nan, np.float32), "NaN"),
    ("missing.npy", "absent", "does not exist"),
])
def test_a_bad_mean_image_file_is_one_line_naming_it(made, tmp_path, name, content, needle):
    folder, _ = made
    path = tmp_path / name
    if isinstance(content, bytes) and content == b"huge":  # a header declaring 120 GB of floats, and none of them
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (3, 100_000, 100_000)})
        path.write_bytes(header.getvalue())
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    code, _, err = run("predict", folder / "image.png", "--weights", folder / "net.caffemodel", "--mean-image", path)
    one_line_error(code, err, name, needle)


def test_batches_cut_the_mean_image_under_each_view_and_mirror_it_with_the_view():
    from alexnet_parity.training import Batches, Synthetic

    spec = get_spec("single-column", input_size=67, num_classes=10)
    spec = __import__("dataclasses").replace(spec, preprocessing=prep.convention("caffe", spec, "test"))
    source = Synthetic(num_classes=10, count=3, seed=0)
    mean = varying_mean(seed=5)
    plain = Batches(source, spec, 3, train=False, ten_crop=True)[0][0]
    got = Batches(source, spec, 3, train=False, ten_crop=True, mean_image=mean)[0][0]
    from alexnet_parity.training import augment
    for v, (t, l, f) in enumerate(augment.ten_crop_positions(BASE, 67)):
        patch = mean[:, t:t + 67, l:l + 67]
        patch = patch[:, :, ::-1] if f else patch
        want = plain[:, v] + (CAFFE_MEAN[:, None, None] - patch)  # std 1: the channel mean back, the patch off
        np.testing.assert_allclose(got[:, v], want, atol=1e-3)
    with pytest.raises(ValueError, match="3x76x76"):
        Batches(source, spec, 3, train=False, mean_image=mean[:, :70, :70])


@pytest.mark.parametrize("bad,field", [({"mean_kind": "image", "mean_image": {"shape": [3, 4], "sha256": "0" * 64}},
                                        "shape"),
                                       ({"mean_kind": "image", "mean_image": {"shape": [3, 4, 4], "sha256": "xyz"}},
                                        "sha256"),
                                       ({"mean_kind": "pixel", "mean_image": {"shape": [3, 4, 4], "sha256": "0" * 64}},
                                        "mean_image")])
def test_a_hostile_mean_image_record_is_one_line_naming_the_file(bad, field):
    record = {**prep.to_dict(VARIANTS["caffe"].preprocessing), **bad}
    with pytest.raises(ValueError) as err:
        prep.from_dict(record, "x.safetensors")
    assert "x.safetensors" in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


def test_a_keras_file_carries_the_preprocessing_and_loads_in_safe_mode(made, tmp_path):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    folder, _ = made
    dst = tmp_path / "net.keras"
    code, _, err = run("convert", folder / "net.caffemodel", dst)
    assert code == 0, err
    assert wc.preprocessing_of(dst, SPEC) == (prep.convention("caffe", SPEC, prep.CAFFE_CONVENTION), "file")
    via_caffe, caffe_err = predict(made, folder / "net.caffemodel")
    via_keras, keras_err = predict(made, dst)
    assert via_keras == via_caffe
    line = next(x for x in caffe_err.splitlines() if x.startswith("input: "))
    assert line.split(" (")[0] in keras_err and "as the file records" in keras_err, keras_err
    model = keras.saving.load_model(str(dst), compile=False, safe_mode=True)
    assert model.count_params() == SPEC.param_count()

    mean = varying_mean(seed=3)  # a recorded mean image travels through a .keras too
    binaryproto(tmp_path / "mean.binaryproto", mean)
    code, _, err = run("convert", folder / "net.caffemodel", dst, "--mean-image", tmp_path / "mean.binaryproto")
    assert code == 0, err
    assert wc.preprocessing_of(dst, SPEC)[0].mean_image == prep.mean_image_of(mean)
