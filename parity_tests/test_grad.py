"""Gradient parity: every config x every engine with autodiff, each gradient (input, every layer output, every
weight) within GRAD_TOLERANCE of the float64 backward that follows the engine's routing at near ties; and broken
backward passes, each caught at its layer."""
import pytest

from alexnet_parity.common import get_spec
from alexnet_parity.common.engines import differentiable
from alexnet_parity.parity_tests.core import config_id, configs, twin_of
from alexnet_parity.parity_tests.grad import GRAD_TOLERANCE, grad_failures, run_grad_parity

# CI runs a representative three (groups + LRN + asymmetric pad; overlapping adaptive bins; convs as fc): all 13
# configs x 3 engines took 570 s on this 2-core machine under load (reference backward included), these three
# about 130 s of it; the other ten are slow (`pytest -m slow parity_tests/test_grad.py`). An engine that runs
# another's model on another backend (keras-jax, keras-torch: core.twin_of) runs the first of the three in CI.
CI_CONFIGS = ("paper", "torchvision@256", "slim-v2")


def in_ci(label: str, engine: str) -> bool:
    return label in (CI_CONFIGS[:1] if twin_of(engine) else CI_CONFIGS)


CASES = [pytest.param(v, o, e, id=f"{config_id(v, o)}-{e}",
                      marks=() if in_ci(config_id(v, o), e) else pytest.mark.slow)
         for v, o in configs() for e in differentiable()]


def installed(engine):
    if not differentiable()[engine].available():
        pytest.skip(f"{engine} is not installed")


def test_every_autodiff_engine_is_measured():
    """The registry says which engines differentiate; ONNX Runtime runs inference only."""
    assert {"torch", "keras", "flax"} <= set(differentiable()) and "onnxruntime" not in differentiable()


@pytest.mark.parametrize("variant,overrides,engine", CASES)
def test_every_gradient_agrees(variant, overrides, engine):
    installed(engine)
    result = run_grad_parity(variant, overrides, engine=engine)
    spec = get_spec(variant, **overrides)
    assert set(result.errors) == {"input", *(layer.name for layer in spec.layers), *spec.weight_shapes()}
    bad = grad_failures(result)
    assert not bad, f"{result.id}: " + "; ".join(bad[:10])
    assert sum(result.near_ties.values()) >= sum(result.rerouted.values())


# --- broken backward passes, each in place of one layer: a torch autograd Function, a jax.custom_vjp, a
#     tf.custom_gradient (keras runs in this process: its Keras runs TensorFlow) ---------------------------

@pytest.fixture
def torch_port(monkeypatch):
    """break_layer(name, module): the torch model built for the next run has `module` as layer `name`."""
    pytest.importorskip("torch")
    from alexnet_parity.torch_impl import model as torch_model

    make_layer = torch_model.make_layer

    def break_layer(name, broken):
        monkeypatch.setattr(torch_model, "make_layer",
                            lambda layer, device=None: broken(layer) if layer.name == name else make_layer(layer, device))

    return break_layer


def _broken_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from alexnet_parity.torch_impl import layers

    class ReluPassingNegatives(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            return g  # the mask (x > 0) forgotten: negatives' gradient passes too

    class LrnWithoutCrossChannel(layers._LocalResponseNormFunction):
        @staticmethod
        def backward(ctx, g):
            x, d, r = ctx.saved_tensors
            return g * r, None, None, None, None  # only dL/da_c's own term, g_c d_c^-beta

    class PoolToFirstElement(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, kernel, stride):
            ctx.shape, ctx.stride = x.shape, stride
            return F.max_pool2d(x, kernel, stride)

        @staticmethod
        def backward(ctx, g):
            gx, s = g.new_zeros(ctx.shape), ctx.stride
            oh, ow = g.shape[-2:]
            gx[..., :s * (oh - 1) + 1:s, :s * (ow - 1) + 1:s] += g  # each window's top-left, not its maximum
            return gx, None, None

    class Relu(nn.Module):
        def forward(self, x):
            return ReluPassingNegatives.apply(x)

    class Lrn(layers.LocalResponseNorm):
        def forward(self, x):
            return LrnWithoutCrossChannel.apply(x, self.size, self.scale, self.beta, self.k)

    class Pool(layers.MaxPool2d):
        def forward(self, x):
            if any(self.pad):
                x = F.pad(x, self.pad, value=float("-inf"))
            return PoolToFirstElement.apply(x, self.kernel_size, self.stride)

    return {"relu": lambda layer: Relu(), "lrn": lambda layer: Lrn(layer),
            "max_pool": lambda layer: Pool(layer.kernel, layer.stride, layers._pad_arg(layer.padding))}


def _broken_flax_ops():
    """Each a jax.custom_vjp: jax_impl's own forward, a broken backward (the torch ones' faults, in NHWC)."""
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    from alexnet_parity.jax_impl import layers

    @jax.custom_vjp
    def relu(x):
        return jax.nn.relu(x)

    relu.defvjp(lambda x: (relu(x), None), lambda _, g: (g,))  # the mask (x > 0) forgotten

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def lrn(x, layer):
        return layers.lrn(x, layer)

    def lrn_bwd(layer, x, g):  # only dL/da_c's own term, g_c d_c^-beta
        half, c = layer.size // 2, x.shape[-1]
        sq = jnp.pad(x * x, ((0, 0), (0, 0), (0, 0), (half, layer.size - 1 - half)))
        d = layer.k + layer.scale * sum(sq[..., i:i + c] for i in range(layer.size))
        return (g * d ** -layer.beta,)

    lrn.defvjp(lambda x, layer: (lrn(x, layer), x), lrn_bwd)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def max_pool(x, layer):
        return layers.max_pool(x, layer)

    def max_pool_bwd(layer, x, g):  # each window's top-left, not its maximum
        (top, bottom), (left, right) = layer.padding
        h, w, s = top + x.shape[1] + bottom, left + x.shape[2] + right, layer.stride
        oh, ow = g.shape[1:3]
        grad = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), (0, h - s * (oh - 1) - 1, s - 1),
                                                   (0, w - s * (ow - 1) - 1, s - 1), (0, 0, 0)])
        return (grad[:, top:top + x.shape[1], left:left + x.shape[2]],)

    max_pool.defvjp(lambda x, layer: (max_pool(x, layer), x), max_pool_bwd)
    return {"relu": lambda x, layer: relu(x), "lrn": lrn, "max_pool": max_pool}


@pytest.fixture
def flax_port(monkeypatch):
    """break_layer(name, op): the Flax model runs op(x, layer) as layer `name` (AlexNet.apply_layer is the one
    dispatch its forward and jax_impl's gradient both run)."""
    pytest.importorskip("flax")
    from alexnet_parity.jax_impl.model import AlexNet

    apply_layer = AlexNet.apply_layer

    def break_layer(name, broken):
        monkeypatch.setattr(AlexNet, "apply_layer", lambda self, layer, x, **kw: broken(x, layer)
                            if layer.name == name else apply_layer(self, layer, x, **kw))

    return break_layer


def _broken_keras_ops():
    """Each a tf.custom_gradient in place of one Keras layer's call (keras, the TensorFlow backend): the right
    forward, a broken backward (the torch ones' faults, in NHWC). {kind: (the layer class, call(layer, x))}."""
    import keras
    import tensorflow as tf

    from alexnet_parity.tf_impl.layers import LocalResponseNorm

    def relu(layer, x):
        @tf.custom_gradient
        def passing_negatives(x):
            return tf.nn.relu(x), lambda g: g  # the mask (x > 0) forgotten
        return passing_negatives(x)

    def lrn(layer, x):
        half, channels = layer.size // 2, x.shape[-1]

        @tf.custom_gradient
        def without_cross_channel(x):
            squares = tf.pad(tf.square(x), [[0, 0], [0, 0], [0, 0], [half, layer.size - 1 - half]])
            r = tf.pow(layer.k + layer.scale * tf.add_n([squares[..., i:i + channels] for i in range(layer.size)]),
                       -layer.beta)
            return x * r, lambda g: g * r  # only dL/da_c's own term, g_c d_c^-beta
        return without_cross_channel(x)

    def max_pool(layer, x):
        (k, _), (s, _) = layer.pool_size, layer.strides

        @tf.custom_gradient
        def to_first_element(x):
            def grad(g):  # each window's top-left, not its maximum
                n, oh, ow, c = g.shape
                index = tf.stack(tf.meshgrid(tf.range(n), tf.range(oh) * s, tf.range(ow) * s, tf.range(c),
                                             indexing="ij"), -1)
                return tf.scatter_nd(index, g, tf.shape(x))
            return tf.nn.max_pool2d(x, k, s, "VALID"), grad
        return to_first_element(x)

    return {"relu": (keras.layers.ReLU, relu), "lrn": (LocalResponseNorm, lrn),
            "max_pool": (keras.layers.MaxPooling2D, max_pool)}


@pytest.fixture
def keras_port(monkeypatch):
    """break_layer(name, (cls, call)): in the Keras model built for the next run, the layer `name` (of class cls)
    computes call(layer, x)."""
    pytest.importorskip("tensorflow")
    from alexnet_parity.common.engines import get_engine
    assert get_engine("keras").runs_here(), "this process's Keras runs another backend: the patch cannot reach keras"

    def break_layer(name, broken):
        cls, call = broken
        own = cls.call
        monkeypatch.setattr(cls, "call", lambda self, x, *args, **kwargs: call(self, x) if self.name == name
                            else own(self, x, *args, **kwargs))

    return break_layer


BROKEN = {"torch": ("torch_port", _broken_modules), "flax": ("flax_port", _broken_flax_ops),
          "keras": ("keras_port", _broken_keras_ops)}


@pytest.mark.parametrize("engine", BROKEN)
@pytest.mark.parametrize("kind,layer", [("relu", "relu3"), ("lrn", "norm1"), ("max_pool", "pool2")])
def test_a_broken_backward_fails_at_its_layer(request, engine, kind, layer):
    fixture, broken = BROKEN[engine]
    request.getfixturevalue(fixture)(layer, broken()[kind])
    result = run_grad_parity("caffe", {"input_size": 99}, engine=engine)
    assert max(result.forward.values()) <= 1e-5  # the forward is right: only the backward is broken
    assert grad_failures(result) and result.at_fault() == layer
    below = get_spec("caffe", input_size=99).layers
    below = below[[l.name for l in below].index(layer) - 1].name
    print(f"\nbroken {engine} {kind} at {layer}: d/d {below} {result.errors[below]:.1e}, "
          f"d/d input {result.errors['input']:.1e}")
    assert result.errors[below] > 1e-2
