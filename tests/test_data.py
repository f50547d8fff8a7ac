"""training/: the paper's data path checked against its definitions: crops at the drawn offsets, mirrors,
the PCA lighting formula, the ten test views, averaged softmax, seeded determinism, and each source's format."""
import time

import numpy as np
import pytest
from PIL import Image

from alexnet_parity.common import get_spec
from alexnet_parity.training import (PCA_EIGVAL, PCA_EIGVEC, ArraySource, Batches, Cifar10, ImageFolder, Synthetic,
                      average_softmax, base_image, base_size, lighting_offset, read_cifar10_batch,
                      ten_crop_positions, to_batch, to_pixels, val_split)
from alexnet_parity.training.augment import draw

BASE = 256


def ramp_source(n=6):
    """256x256 images whose pixels name their place: R = row, G = column, B = 40 * image index."""
    rows, cols = np.indices((BASE, BASE))
    images = np.stack([np.stack([rows, cols, np.full_like(rows, 40 * i)], -1) for i in range(n)]).astype(np.uint8)
    return ArraySource(images, np.arange(n) % 3)


@pytest.fixture(scope="module")
def ramp():
    return ramp_source()


def pixels(x, spec):
    return np.rint(to_pixels(x, spec.preprocessing))


# --- geometry ---------------------------------------------------------------------------------------

def test_base_image_is_short_side_resize_then_centre_square():
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(img).resize((48, 32), Image.BILINEAR))[:, 8:40]  # 60*32/40 = 48
    np.testing.assert_array_equal(base_image(img, 32), want)
    tall = img.transpose(1, 0, 2).copy()  # 60x40: the width is the short side
    want = np.asarray(Image.fromarray(tall).resize((32, 48), Image.BILINEAR))[8:40]
    np.testing.assert_array_equal(base_image(tall, 32), want)


def test_base_size_is_256_at_default_sizes_and_keeps_the_ratio_for_overrides():
    for variant in ("paper", "caffe", "caffenet", "single-column", "torchvision", "slim-v2"):
        assert base_size(get_spec(variant)) == 256
    assert base_size(get_spec("torchvision", input_size=320)) == 366  # 256 * 320 / 224
    assert base_size(get_spec("caffe", input_size=256)) == 289  # 256 * 256 / 227


@pytest.mark.parametrize("variant", ["paper", "caffe", "torchvision"])
def test_train_crop_is_the_slice_at_the_drawn_offset(ramp, variant):
    spec = get_spec(variant, num_classes=3)
    size = spec.input_size
    batches = Batches(ramp, spec, 4, train=True, seed=7, lighting_std=0.0)
    seen_flips = set()
    for i in range(len(batches)):
        x, y = batches[i]
        assert x.shape == (len(y), 3, size, size) and x.dtype == np.float32 and y.dtype == np.int64
        d, idx = batches.draws(i), batches.indices(i)
        np.testing.assert_array_equal(y, ramp.labels[idx])
        for k, j in enumerate(idx):
            t, l, f = int(d.top[k]), int(d.left[k]), bool(d.flip[k])
            assert 0 <= t <= BASE - size and 0 <= l <= BASE - size
            want = ramp.images[j][t:t + size, l:l + size]
            want = want[:, ::-1] if f else want
            np.testing.assert_array_equal(pixels(x[k:k + 1], spec)[0], want)
            seen_flips.add(f)
    assert seen_flips == {True, False}


def test_flip_is_the_mirror_of_the_unflipped_crop(ramp):
    spec = get_spec("caffe", num_classes=3)
    on = Batches(ramp, spec, 6, train=True, seed=3)
    off = Batches(ramp, spec, 6, train=True, seed=3, flip=False)
    (x_on, _), (x_off, _) = on[0], off[0]
    flips = on.draws(0).flip
    assert flips.any() and not flips.all()
    np.testing.assert_array_equal(x_on[flips], x_off[flips][..., ::-1])
    np.testing.assert_array_equal(x_on[~flips], x_off[~flips])


def test_draws_cover_every_offset_fairly():
    d = draw(np.random.default_rng(0), 20000, base=40, size=32)
    assert set(np.unique(d.top)) == set(range(9)) and set(np.unique(d.left)) == set(range(9))
    assert abs(d.flip.mean() - 0.5) < 0.02
    assert abs(d.alpha.std() - 0.1) < 0.005 and abs(d.alpha.mean()) < 0.005


# --- lighting -----------------------------------------------------------------------------------------

def test_pca_constants_are_the_papers():
    np.testing.assert_array_equal(PCA_EIGVAL, [0.2175, 0.0188, 0.0045])
    np.testing.assert_allclose(np.linalg.norm(PCA_EIGVEC, axis=0), 1.0, atol=1e-3)  # columns: unit eigenvectors


@pytest.mark.parametrize("variant", ["caffe", "torchvision"])  # BGR in [0, 255]; RGB in [0, 1] over std
def test_lighting_adds_eigvec_times_alpha_eigval_to_every_pixel(ramp, variant):
    spec = get_spec(variant, num_classes=3)
    pre = spec.preprocessing
    lit = Batches(ramp, spec, 3, train=True, seed=11)
    plain = Batches(ramp, spec, 3, train=True, seed=11, lighting_std=0.0)
    alpha = lit.draws(0).alpha
    offsets = lighting_offset(alpha, pre.pixel_range)
    for a, off in zip(alpha, offsets):
        np.testing.assert_array_equal(off, PCA_EIGVEC @ (a * PCA_EIGVAL) * pre.pixel_range)
    order = [2, 1, 0] if pre.color_order == "BGR" else [0, 1, 2]
    want = offsets[:, order] / np.asarray(pre.std)
    diff = (lit[0][0] - plain[0][0]).astype(np.float64)
    scale = np.abs(plain[0][0]).max()
    np.testing.assert_allclose(diff, np.broadcast_to(want[:, :, None, None], diff.shape), atol=2e-6 * scale)
    assert np.abs(want).max() > 1e-3 * pre.pixel_range  # the noise is really there


def test_normalisation_matches_each_variants_definition():
    img = np.random.default_rng(1).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    caffe = get_spec("caffe").preprocessing  # BGR, [0, 255], mean only
    want = img[..., ::-1].astype(np.float64) - np.asarray(caffe.mean)
    np.testing.assert_allclose(to_batch(img, caffe), want.transpose(0, 3, 1, 2), atol=1e-4)
    tv = get_spec("torchvision").preprocessing  # RGB, [0, 1], mean and std
    want = (img / 255.0 - np.asarray(tv.mean)) / np.asarray(tv.std)
    np.testing.assert_allclose(to_batch(img, tv), want.transpose(0, 3, 1, 2), atol=1e-5)


# --- test time ----------------------------------------------------------------------------------------

def test_ten_crop_views_are_corners_centre_and_mirrors(ramp):
    spec = get_spec("caffe", num_classes=3)
    size, far = 227, BASE - 227
    x, y = Batches(ramp, spec, 4, train=False, ten_crop=True)[0]
    assert x.shape == (4, 10, 3, size, size)
    np.testing.assert_array_equal(y, ramp.labels[:4])
    positions = ten_crop_positions(BASE, size)
    mid = round(far / 2)
    assert positions[:5] == [(0, 0, False), (0, far, False), (far, 0, False), (far, far, False), (mid, mid, False)]
    assert positions[5:] == [(t, l, True) for t, l, _ in positions[:5]]
    for n in range(4):
        views = pixels(x[n], spec)
        assert len({v.tobytes() for v in views}) == 10
        for v, (t, l, f) in zip(views, positions):
            want = ramp.images[n][t:t + size, l:l + size]
            np.testing.assert_array_equal(v, want[:, ::-1] if f else want)
    centre, _ = Batches(ramp, spec, 4, train=False)[0]
    np.testing.assert_array_equal(centre, x[:, 4])


def test_average_softmax_averages_probabilities_not_logits():
    logits = np.zeros((1, 10, 2))
    logits[0, 0] = [20.0, 0.0]  # one confident view for class 0
    logits[0, 1:] = [0.0, 2.0]  # nine mild views for class 1
    p = average_softmax(logits)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(p, (e / e.sum(-1, keepdims=True)).mean(1), rtol=1e-12)
    assert p.argmax() == 1 and logits.mean(1).argmax() == 0
    big = average_softmax(np.random.default_rng(0).normal(0, 1000, (3, 10, 5)))
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big.sum(-1), 1.0)
    with pytest.raises(ValueError, match="batch, views, classes"):
        average_softmax(np.zeros((10, 5)))


# --- determinism --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return Synthetic(num_classes=4, count=20, size=24, seed=0), get_spec("torchvision", input_size=64, num_classes=4)


def _epoch(src, spec, **kw):
    return [(x.copy(), y.copy()) for x, y in Batches(src, spec, 6, train=True, **kw)]


def test_same_seed_same_batches_other_seed_or_epoch_others(small):
    src, spec = small
    a, b = _epoch(src, spec, seed=5, epoch=2), _epoch(src, spec, seed=5, epoch=2)
    assert len(a) == 4 and [len(y) for _, y in a] == [6, 6, 6, 2]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for other in (_epoch(src, spec, seed=6, epoch=2), _epoch(src, spec, seed=5, epoch=3)):
        assert not np.array_equal(a[0][0], other[0][0])
    draws = [Batches(src, spec, 6, train=True, seed=s, epoch=e).draws(1).alpha for s, e in ((5, 2), (6, 2), (5, 3))]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])  # fresh noise each
    order = np.concatenate([Batches(src, spec, 6, train=True, seed=5, epoch=2).indices(i) for i in range(4)])
    assert sorted(order) == list(range(20)) and list(order) != list(range(20))


def test_any_batch_can_be_rebuilt_alone_to_resume(small):
    src, spec = small
    full = _epoch(src, spec, seed=1, epoch=4)
    resumed = Batches(src, spec, 6, train=True, seed=1, epoch=4)[2]
    np.testing.assert_array_equal(resumed[0], full[2][0])
    threaded = Batches(src, spec, 6, train=True, seed=1, epoch=4, threads=3)[2]
    np.testing.assert_array_equal(threaded[0], full[2][0])
    assert len(Batches(src, spec, 6, train=True, drop_last=True)) == 3


def test_eval_is_in_order_and_seed_free(small):
    src, spec = small
    a, b = Batches(src, spec, 8, train=False, seed=0), Batches(src, spec, 8, train=False, seed=9, epoch=3)
    np.testing.assert_array_equal(np.concatenate([y for _, y in a]), src.labels)
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_a_batch_of_32_synthetic_images_at_224_takes_well_under_a_second():
    batches = Batches(Synthetic(10, 64, size=64), get_spec("paper", num_classes=10), 32, train=True)
    batches[0]
    start = time.perf_counter()
    x, _ = batches[1]
    assert x.shape == (32, 3, 224, 224)
    assert time.perf_counter() - start < 1.0


# --- sources ------------------------------------------------------------------------------------------

def _cifar_records(rng, n):
    return rng.integers(0, 10, n, dtype=np.uint8), rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_cifar(folder, rng, counts=(3, 2, 4, 1, 2), test=2):
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, n in zip(names, (*counts, test)):
        labels, planes = _cifar_records(rng, n)
        (folder / name).write_bytes(np.concatenate([labels[:, None], planes], 1).tobytes())
        written[name] = (labels, planes)
    return written


def test_cifar10_binary_records(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-bin", np.random.default_rng(0))
    train, test = Cifar10(tmp_path, train=True), Cifar10(tmp_path / "cifar-10-batches-bin", train=False)
    assert len(train) == 12 and len(test) == 2 and train.classes[0] == "airplane" and train.num_classes == 10
    labels = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    planes = np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(train.labels, labels)
    ch, r, c = 2, 5, 31  # byte 1 + ch * 1024 + r * 32 + c of the record is pixel (r, c) of plane ch
    for n in range(len(train)):
        assert train.image(n)[r, c, ch] == planes[n, ch * 1024 + r * 32 + c]
        np.testing.assert_array_equal(train.image(n)[..., 0].ravel(), planes[n, :1024])
    np.testing.assert_array_equal(test.labels, written["test_batch.bin"][0])


def test_cifar10_at_224_is_scaled_up_bilinearly_then_cropped(tmp_path):
    _write_cifar(tmp_path, np.random.default_rng(1))
    src = Cifar10(tmp_path, train=False)
    spec = get_spec("torchvision", num_classes=10)
    x, _ = Batches(src, spec, 2, train=False)[0]
    up = np.asarray(Image.fromarray(src.image(0)).resize((256, 256), Image.BILINEAR))[16:240, 16:240]
    np.testing.assert_array_equal(pixels(x[:1], spec)[0], up)


def test_cifar10_errors_name_the_file(tmp_path):
    rng = np.random.default_rng(2)
    _write_cifar(tmp_path, rng)
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin"):
        Cifar10(tmp_path)
    bad = tmp_path / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"test_batch\.bin.*3073"):
        Cifar10(tmp_path, train=False)
    bad.write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(ValueError, match=r"test_batch\.bin.*label 12"):
        read_cifar10_batch(bad)


def test_image_folder_sorted_classes_and_decoded_pixels(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    for d in ("zebra", "ant", "moth/wings", ".cache"):
        (tmp_path / d).mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "zebra" / "b.png")
    Image.fromarray(rgb[::-1].copy()).save(tmp_path / "zebra" / "a.PNG")
    Image.fromarray(gray).save(tmp_path / "ant" / "x.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])).save(tmp_path / "moth/wings/y.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    Image.fromarray(rgb).save(tmp_path / ".cache" / "z.png")
    src = ImageFolder(tmp_path)
    assert src.classes == ("ant", "moth", "zebra")
    np.testing.assert_array_equal(src.labels, [0, 1, 2, 2])
    np.testing.assert_array_equal(src.image(0), np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(src.image(1), rgb)  # RGBA -> RGB
    np.testing.assert_array_equal(src.image(2), rgb[::-1])  # a.PNG sorts before b.png
    np.testing.assert_array_equal(src.image(3), rgb)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match="cat holds no images"):
        ImageFolder(tmp_path)
    (tmp_path / "cat" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    src = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"cannot decode image .*bad\.jpg"):
        src.image(0)


def test_synthetic_is_deterministic_any_size_and_learnable():
    a, b, c = (Synthetic(seed=s, count=30, size=24) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.image(17), b.image(17))
    assert not np.array_equal(a.image(17), c.image(17))
    assert Synthetic(size=(20, 37)).image(3).shape == (20, 37, 3)
    assert list(np.bincount(a.labels)) == [3] * 10
    with pytest.raises(IndexError):
        a.image(30)
    # the class lives in the grating's angle and frequency: a nearest-mean rule on the spectrum finds it
    src = Synthetic(num_classes=10, count=400, size=32, seed=0)
    gray = np.stack([src.image(i) for i in range(len(src))]).mean(-1)
    feats = np.log1p(np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True))).reshape(len(gray), -1))
    fit, held = slice(0, 300), slice(300, 400)
    means = np.stack([feats[fit][src.labels[fit] == k].mean(0) for k in range(10)])
    guess = np.argmin(((feats[held][:, None] - means) ** 2).sum(-1), 1)
    assert (guess == src.labels[held]).mean() > 0.9


def test_val_split_is_stratified_disjoint_and_seeded():
    src = Synthetic(num_classes=4, count=40, size=8)
    train, val = val_split(src, 0.25, seed=0)
    assert sorted(np.concatenate([train.indices, val.indices])) == list(range(40))
    assert list(np.bincount(val.labels, minlength=4)) == [round(0.25 * 10)] * 4
    np.testing.assert_array_equal(val.image(0), src.image(int(val.indices[0])))
    np.testing.assert_array_equal(val_split(src, 0.25, seed=0)[1].indices, val.indices)
    assert not np.array_equal(val_split(src, 0.25, seed=1)[1].indices, val.indices)
    with pytest.raises(ValueError, match="between 0 and 1"):
        val_split(src, 1.0)


def test_batches_errors(small):
    src, spec = small
    with pytest.raises(ValueError, match="4 classes but the paper spec has 2 outputs; pass num_classes=4"):
        Batches(src, get_spec("paper", num_classes=2), 4, train=True)
    with pytest.raises(ValueError, match="ten_crop"):
        Batches(src, spec, 4, train=True, ten_crop=True)
    with pytest.raises(ValueError, match="batch_size"):
        Batches(src, spec, 0, train=False)
    with pytest.raises(ValueError, match="resize 50 is smaller than the input size 64"):
        Batches(src, spec, 4, train=False, resize=50)
    with pytest.raises(IndexError):
        Batches(src, spec, 4, train=False)[5]
    with pytest.raises(ValueError, match="uint8"):
        ArraySource(np.zeros((2, 4, 4, 3), np.float32), [0, 1])


def test_importing_training_pulls_in_no_framework():
    import subprocess
    import sys
    code = "import sys, alexnet_parity.training; print([m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
