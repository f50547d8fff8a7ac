"""alexnet-parity: every well-known AlexNet as one spec, built equivalently in PyTorch, Keras and Flax NNX.

The subpackages are the repository's top-level folders (common, torch_impl, tf_impl, jax_impl,
weights_convert, parity_tests, training, alexnet_cli), mapped here by setuptools' package-dir when
installed. Run from a source checkout without installing (PYTHONPATH=the checkout), this package finds them
beside its own folder, so a checkout always imports its own code.
"""
import os as _os

__version__ = "0.1.0"

_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "pyproject.toml")) and _os.path.isfile(
        _os.path.join(_checkout, "common", "variants.py")):
    __path__.append(_checkout)  # noqa: F821 -- a package's __path__ is set before its __init__ runs
