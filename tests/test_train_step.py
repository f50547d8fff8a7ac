"""The paper's training recipe in all three frameworks, step for step: each optimizer against the numpy
definition (common.optim.paper_sgd_update, with Caffe's multipliers and an lr drop, where
torch.optim.SGD parts ways), and one training step of every variant from the same weights and batch
giving the same gradients, velocities and weights in torch, Keras and Flax.

Dropout is switched off (rate 0 in the spec) so that a step is deterministic: the three frameworks draw
their masks from different RNGs.
"""
from __future__ import annotations


import numpy as np
import pytest

from alexnet_parity.common import VARIANTS, get_spec, nchw_to_nhwc, reference_forward, smallest_input_size
from alexnet_parity.common.engines import engines, trainable
from alexnet_parity.common.optim import PaperSGD, multipliers, paper_sgd_update

TOL = 1e-5  # cross-framework, per tensor: max|a - b| / max|b|
OPT_TOL = 1e-6  # an optimizer against the numpy definition, from identical inputs: a few float32 roundings
BATCH = 4


# --- the engines that train, from the registry, behind one small interface -----------------------------
class Engine:
    def __init__(self, engine):
        self.engine, self.name = engine, engine.name
        self.impl, self.train = engine.impl(), engine.train_module()

    def build(self, spec, weights):
        return self.engine.build_model(spec, weights)

    def native_x(self, x_nchw):
        return nchw_to_nhwc(x_nchw) if self.engine.layout == "NHWC" else x_nchw

    def apply(self, model, opt, grads):
        self.train.apply_gradients(model, opt, grads)


def _installed(engine):
    if not engine.available():
        pytest.skip(engine.missing())
    return Engine(engine)


def in_this_process() -> dict:
    """The trainable engines this test process runs: its Keras runs TensorFlow (Keras reads its backend once per
    process), so keras-jax and keras-torch take their steps in their own processes, in test_keras_backends."""
    return {name: e for name, e in trainable().items() if e.env.get("KERAS_BACKEND", "tensorflow") == "tensorflow"}


@pytest.fixture(scope="module", params=list(in_this_process()))
def fw(request):
    return _installed(trainable()[request.param])


@pytest.fixture(scope="module")
def all_fws():
    return [_installed(engine) for engine in in_this_process().values()]


# --- data -----------------------------------------------------------------------------------------------
def no_dropout(spec):
    return spec.replace_layers("dropout", rate=0.0)


def small_spec(variant):
    """The variant at the smallest input size whose pool5 is at least 2x2 (at 1x1, fc6's C,H,W and H,W,C
    row orders coincide and a flatten-order bug would pass), 10 classes, dropout off."""
    size = smallest_input_size(variant)
    while get_spec(variant, input_size=size, num_classes=10).layer("pool5").out_shape[1] < 2:
        size += 1
    return no_dropout(get_spec(variant, input_size=size, num_classes=10))


def lively_weights(spec, seed=0):
    """He-scaled normal weights and small random biases: every layer alive, every weight varying over
    space and channel (so a transposed kernel or fc6's row order shows); fc8 scaled down to keep the
    logits of order 1 (large logits amplify float32 forward rounding through the softmax)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in spec.param_layers:
        std = np.float32(np.sqrt(2.0 / layer.fan_in) * (0.03 if layer.name == "fc8" else 1.0))
        weights[f"{layer.name}.weight"] = rng.standard_normal(layer.weight_shape, dtype=np.float32) * std
        weights[f"{layer.name}.bias"] = rng.uniform(-0.1, 0.1, layer.weight_shape[:1]).astype(np.float32)
    return weights


def batch(spec, n=BATCH, seed=1):
    """NCHW images and labels: at Caffe's pixel scale where there is an LRN (so it is far from the
    identity), else at a scale that keeps the logits of order 1."""
    rng = np.random.default_rng(seed)
    scale = 50.0 if any(layer.kind == "lrn" for layer in spec.layers) else 5.0
    x = (rng.standard_normal((n, *spec.input_shape)) * scale).astype(np.float32)
    return x, rng.integers(0, spec.num_classes, n)


def clear_of_kinks(spec, weights, x, margin=1e-4):
    """`weights` with fc6/fc7's biases nudged so that no unit's pre-activation on batch x lies within
    margin * (the layer's largest) of ReLU's kink: there, float32 rounding (~1e-6) could flip the
    unit in one framework and not another, and its whole gradient row with it (seen at 224: one fc7
    unit at -7e-5 of 140 moved fc7.bias's gradient by 14%). A float64 forward finds them."""
    weights = dict(weights)
    h = reference_forward(spec, weights, x)["flatten"]
    layers = spec.layers[[layer.name for layer in spec.layers].index("flatten") + 1:]
    for layer, after in zip(layers, layers[1:]):
        if layer.kind == "dense":
            w, b = weights[f"{layer.name}.weight"].astype(np.float64), weights[f"{layer.name}.bias"].astype(np.float64)
            pre = h @ w.T
            eps = margin * np.abs(pre + b).max()
            if after.kind == "relu":
                while (near := (np.abs(pre + b) < eps).any(axis=0)).any():
                    b = b + near * 2 * eps
                weights[f"{layer.name}.bias"] = b.astype(np.float32)
            h = pre + weights[f"{layer.name}.bias"]
        elif layer.kind == "relu":
            h = np.maximum(h, 0)
    return weights


def near_kinks(spec, weights, x, margin=1e-6) -> dict[str, int]:
    """Where float32 rounding alone could route a gradient differently in two frameworks: ReLU inputs
    within margin * (layer max) of 0, and max-pool windows whose two largest values are that close
    (ties among zeros excepted: they carry no gradient). For failure messages: a step that differs
    only there is a different, equally valid float32 answer, not a bug."""
    acts = reference_forward(spec, weights, x)
    names = [layer.name for layer in spec.layers]
    found = {}
    for i, layer in enumerate(spec.layers[1:], 1):
        a = acts[names[i - 1]]
        eps = margin * np.abs(a).max()
        if layer.kind == "relu":
            found[layer.name] = int((np.abs(a) < eps).sum())
        elif layer.kind == "maxpool":
            (top, bottom), (left, right) = layer.padding
            a = np.pad(a, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
            k, st, (_, oh, ow) = layer.kernel, layer.stride, layer.out_shape
            windows = np.sort(np.stack([a[:, :, di:di + st * (oh - 1) + 1:st, dj:dj + st * (ow - 1) + 1:st]
                                        for di in range(k) for dj in range(k)], -1), -1)
            found[layer.name] = int(((windows[..., -1] - windows[..., -2] < eps) & (windows[..., -1] > 0)).sum())
    return {name: n for name, n in found.items() if n}


def rel(a, b) -> float:
    """max|a - b| / max|b|, in float32 (exact enough for the tolerances here, and 20M-element tensors)."""
    return float(np.abs(np.subtract(a, b, dtype=np.float32)).max() / max(float(np.abs(b).max()), 1e-30))


def worst(a: dict, b: dict) -> tuple[float, str]:
    assert sorted(a) == sorted(b), f"names differ: {sorted(a)} vs {sorted(b)}"
    errors = {name: rel(a[name], b[name]) for name in b}
    name = max(errors, key=errors.get)
    return errors[name], name


# --- the optimizer against its definition ----------------------------------------------------------------
OPT_SPEC = small_spec("caffe")  # Caffe's multipliers: biases lr x2, no decay
LRS = (0.01, 0.01, 0.001)  # a drop before the third step: the paper's form keeps the velocity's scale


@pytest.fixture(scope="module")
def fixed_run():
    """Weights, a fixed gradient per step, and the numpy definition's (weights, velocity) after each step."""
    weights = lively_weights(OPT_SPEC)
    rng = np.random.default_rng(7)
    grads = [{k: (rng.standard_normal(a.shape) * 0.1).astype(np.float32) for k, a in weights.items()}
             for _ in LRS]
    mults, cfg = multipliers(OPT_SPEC), PaperSGD()
    w, v = dict(weights), {k: np.zeros_like(a) for k, a in weights.items()}
    after = []
    for g, lr in zip(grads, LRS):
        for name in w:
            w[name], v[name] = paper_sgd_update(w[name], v[name], g[name], lr, cfg, *mults[name])
        after.append((dict(w), dict(v)))
    return weights, grads, after


def test_multipliers_are_caffes():
    mults = multipliers(OPT_SPEC)
    assert mults["conv1.bias"] == (2.0, 0.0) and mults["conv1.weight"] == (1.0, 1.0)
    assert set(multipliers(small_spec("paper")).values()) == {(1.0, 1.0)}


def test_optimizer_matches_the_numpy_definition(fw, fixed_run):
    """Fixed gradients through each framework's own optimizer (make_optimizer, set_lr) equal the numpy
    rule after every step, velocity and weights, with Caffe's multipliers and an lr drop. Before the
    drop, the run is checkpointed and resumed in a fresh model and optimizer (optimizer_state,
    load_optimizer_state), as a restart would."""
    weights, grads, after = fixed_run
    model = fw.build(OPT_SPEC, weights)
    opt = fw.train.make_optimizer(model, lr=LRS[0])
    assert all(np.all(v == 0) for v in fw.train.optimizer_state(opt).values()), "velocity starts at zero"
    for step, lr in enumerate(LRS, 1):
        if step == 3:  # resume from a checkpoint: weights and velocities, nothing else
            state = fw.train.optimizer_state(opt)
            model = fw.build(OPT_SPEC, fw.impl.export_weights(model))
            opt = fw.train.make_optimizer(model, lr=LRS[0])
            fw.train.load_optimizer_state(opt, model, state)
            assert all(np.array_equal(a, state[k]) for k, a in fw.train.optimizer_state(opt).items())
        fw.train.set_lr(opt, lr)
        assert fw.train.get_lr(opt) == pytest.approx(lr, rel=1e-7)
        fw.apply(model, opt, grads[step - 1])
        want_w, want_v = after[step - 1]
        err_v, name_v = worst(fw.train.optimizer_state(opt), want_v)
        err_w, name_w = worst(fw.impl.export_weights(model), want_w)
        assert err_v <= OPT_TOL, f"{fw.name} step {step}: velocity {name_v} off by {err_v:.2e}"
        assert err_w <= OPT_TOL, f"{fw.name} step {step}: weight {name_w} off by {err_w:.2e}"
    with pytest.raises(ValueError, match="missing tensor"):
        fw.train.load_optimizer_state(opt, model, {k: a for k, a in want_v.items() if k != "fc8.bias"})


def test_torch_sgd_is_not_the_papers_rule_once_lr_drops(fixed_run):
    """torch.optim.SGD (v <- m v + g + wd w; w <- w - lr v) with the same multipliers as param groups
    equals the paper's rule while lr is constant and departs from it at the drop: why PaperSGD exists."""
    torch = pytest.importorskip("torch")
    from alexnet_parity import torch_impl
    weights, grads, after = fixed_run
    model = torch_impl.build_model(OPT_SPEC, weights)
    mults, cfg = multipliers(OPT_SPEC), PaperSGD()
    named = dict(model.named_parameters())
    groups = [dict(params=[named[n] for n in named if mults[n] == m], lr_mult=m[0],
                   weight_decay=cfg.weight_decay * m[1]) for m in sorted(set(mults.values()))]
    sgd = torch.optim.SGD(groups, lr=LRS[0], momentum=cfg.momentum)
    errors = []
    for step, lr in enumerate(LRS, 1):
        for group in sgd.param_groups:
            group["lr"] = lr * group["lr_mult"]
        for name, p in named.items():
            p.grad = torch.from_numpy(grads[step - 1][name].copy())
        sgd.step()
        got, want = torch_impl.export_weights(model), after[step - 1][0]
        # the change since the start, so the (large) weights do not hide a difference in the (small) updates
        errors.append(worst({k: got[k] - weights[k] for k in got}, {k: want[k] - weights[k] for k in got})[0])
    assert errors[0] <= 1e-4 and errors[1] <= 1e-4, f"SGD should equal the paper's rule at constant lr: {errors}"
    assert errors[2] > 0.1, f"after the lr drop torch.optim.SGD should differ from the paper's rule: {errors}"


def test_keras_optimizer_serializes_and_fits(fixed_run):
    """The Keras PaperSGD is a registered Keras citizen: its config round-trips (multipliers and the
    paper's weight decay included, Keras's own decoupled weight_decay off), and model.fit with it takes
    the same step as train_step."""
    pytest.importorskip("tensorflow")
    import keras
    from alexnet_parity import tf_impl
    from alexnet_parity.tf_impl import train
    weights = fixed_run[0]
    x, y = batch(OPT_SPEC)
    model = tf_impl.build_model(OPT_SPEC, weights)
    opt = train.make_optimizer(model, lr=0.01)
    config = opt.get_config()
    assert config["weight_decay"] == PaperSGD().weight_decay and config["multipliers"]["conv1.bias"] == [2.0, 0.0]
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is train.PaperSGD and again.get_config() == config and again.weight_decay is None
    train.train_step(model, opt, nchw_to_nhwc(x), y)
    fitted = tf_impl.build_model(OPT_SPEC, weights)
    fitted.compile(optimizer=train.make_optimizer(fitted, lr=0.01),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fitted.fit(nchw_to_nhwc(x), y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    for part in (train.optimizer_state(fitted.optimizer), train.optimizer_state(opt)), \
            (tf_impl.export_weights(fitted), tf_impl.export_weights(model)):
        err, tensor = worst(*part)
        assert err <= TOL, f"fit vs train_step: {tensor} off by {err:.2e}"


# --- one training step, three frameworks ---------------------------------------------------------------------
def one_step(f, spec, weights, x, y, lr=0.01):
    """gradients() and then train_step() from `weights`; canonical results, and the model and optimizer."""
    model = f.build(spec, weights)
    xn = f.native_x(x)
    grads = f.train.gradients(model, xn, y)
    opt = f.train.make_optimizer(model, lr=lr)
    loss = f.train.train_step(model, opt, xn, y)
    return dict(loss=loss, grads=grads, velocity=f.train.optimizer_state(opt),
                weights=f.impl.export_weights(model)), model, opt


def check_same(out: dict, spec, weights, x):
    """Every engine's loss, gradients, velocity (the step's update) and weights are the first one's."""
    first, ref = next(iter(out.items()))
    assert np.isfinite(ref["loss"]) and ref["loss"] > 0
    dead = [k for k, g in ref["grads"].items() if not np.any(g)]
    assert not dead, f"{spec.describe()}: zero gradient for {dead} (weights not lively enough to test)"
    for name, got in out.items():
        assert got["loss"] == pytest.approx(ref["loss"], rel=TOL), f"{name} loss"
        for part in ("grads", "velocity", "weights"):
            err, tensor = worst(got[part], ref[part])
            assert err <= TOL, (f"{spec.describe()}: {name} vs {first}: {part} of {tensor} off by {err:.2e}; "
                                f"float32 near-ties in this data: {near_kinks(spec, weights, x) or 'none'}")


def check_definition(result: dict, spec, weights, lr=0.01):
    """A framework's compiled step is the numpy rule applied to its own gradients() (a separately
    compiled program: the same up to float32 rounding)."""
    mults, cfg = multipliers(spec), PaperSGD()
    want = {k: paper_sgd_update(w, np.zeros_like(w), result["grads"][k], lr, cfg, *mults[k])
            for k, w in weights.items()}
    assert worst(result["velocity"], {k: v for k, (_, v) in want.items()})[0] <= TOL
    assert worst(result["weights"], {k: w for k, (w, _) in want.items()})[0] <= TOL


# CI: paper (groups, LRN, asymmetric pad, round-up pooling) and torchvision (adaptive pool, dropout before fc6);
# slim-v2's convs as fc have their gradients checked in CI by parity_tests/test_grad.py, and caffe, caffenet and
# single-column take no layer those two do not: all four are -m slow
STEP_IN_CI = {"paper", "torchvision"}


@pytest.mark.parametrize("variant", [v if v in STEP_IN_CI else pytest.param(v, marks=pytest.mark.slow)
                                     for v in VARIANTS])
def test_one_step_is_the_same_in_every_framework(all_fws, variant):
    spec = small_spec(variant)
    x, y = batch(spec)
    weights = clear_of_kinks(spec, lively_weights(spec), x)
    out = {}
    for f in all_fws:
        out[f.name] = one_step(f, spec, weights, x, y)[0]
        check_definition(out[f.name], spec, weights)
    check_same(out, spec, weights, x)


def test_set_lr_reaches_the_compiled_step(all_fws):
    """An lr drop between two compiled steps takes effect (lr is state, not a constant traced in) and
    leaves the velocity at its old scale: v2 = m v1 - rate2 (g2 + wd w1), rate2 = lr1 / 10."""
    spec = small_spec("caffe")
    x, y = batch(spec)
    weights = clear_of_kinks(spec, lively_weights(spec), x)
    mults, cfg = multipliers(spec), PaperSGD()
    for f in all_fws:
        first, model, opt = one_step(f, spec, weights, x, y, lr=0.01)
        f.train.set_lr(opt, 0.001)
        grads = f.train.gradients(model, f.native_x(x), y)
        f.train.train_step(model, opt, f.native_x(x), y)
        want = {k: paper_sgd_update(first["weights"][k], v, grads[k], 0.001, cfg, *mults[k])[1]
                for k, v in first["velocity"].items()}
        err, tensor = worst(f.train.optimizer_state(opt), want)
        assert err <= TOL, f"{f.name}: second velocity of {tensor} off by {err:.2e}"


@pytest.mark.slow  # ~30 s; the small paper net above takes the same layers
def test_one_step_full_size(all_fws):
    """The paper's own net at 224 (asymmetric conv1 pad, round-up pooling, LRN without /n, two columns)."""
    spec = no_dropout(get_spec("paper", num_classes=10))
    x, y = batch(spec, n=2)
    weights = clear_of_kinks(spec, lively_weights(spec), x)
    check_same({f.name: one_step(f, spec, weights, x, y)[0] for f in all_fws}, spec, weights, x)


def _imports(path) -> set[str]:
    """The top-level packages a module imports (alexnet_parity.tf_impl.layers -> tf_impl; torch.nn -> torch)."""
    import ast

    def top(module):
        parts = module.split(".")
        return parts[1] if parts[0] == "alexnet_parity" and len(parts) > 1 else parts[0]

    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {top(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(top(node.module))
            if node.module == "alexnet_parity":
                imported |= {alias.name for alias in node.names}
    return imported


def _packages():
    """(the engines whose code is one package of this project, its folder), once per package: tf_impl is the
    package of all three Keras engines."""
    import importlib.util
    import pathlib
    shared = {}
    for engine in engines().values():
        if isinstance(engine.package, str) and engine.package.startswith("alexnet_parity.") and not engine.oracle:
            shared.setdefault(engine.package, []).append(engine)
    for package, sharing in shared.items():
        spec = importlib.util.find_spec(package)  # the package's __init__ imports no framework
        yield tuple(sharing), pathlib.Path(spec.origin).parent


@pytest.mark.parametrize("sharing,folder", list(_packages()), ids=lambda v: getattr(v, "name", ""))
def test_engine_packages_import_only_their_framework_and_point_down(sharing, folder):
    """Every module of an engine's package imports its own frameworks (for tf_impl: Keras and each of its
    backends), common and its own package: never another engine's framework or package, and never what sits
    above the engines (training, the CLI, the parity harness). distributed.py is the one exception left: its
    command line reuses training.smoke."""
    own = {m for engine in sharing for m in engine.modules}
    others = {m for e in engines().values() for m in e.modules} - own
    packages = {p.name for _, p in _packages()} - {folder.name}
    above = {"training", "alexnet_cli", "parity_tests"}
    for path in sorted(folder.rglob("*.py")):
        imported = _imports(path)
        assert not imported & others, f"{path} imports {imported & others}"
        assert not imported & packages, f"{path} imports {imported & packages}"
        if path.name != "distributed.py":
            assert not imported & above, f"{path} imports {imported & above}"
