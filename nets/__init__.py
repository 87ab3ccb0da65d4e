"""DeepLab networks: Caffe files read by hand, Caffe layer semantics, the forward pass, the CLI.

The main names load on first use (``nets.Net``, ``nets.convert``, ``nets.deeplab``), so
``import nets`` stays light: no Numba kernels compiled, no ``numba.cuda`` loaded.

* :class:`nets.Net`: run a Caffe network (``Net.load(path)``, ``net.forward(data)``);
* :func:`nets.convert`: a caffemodel and its prototxt -> a plain ``.npz``;
* :mod:`nets.deeplab`: the official DeepLab models by name, pre- and post-processing.
"""
import importlib

_LAZY = {"Net": ("nets.graph", "Net"), "convert": ("nets.convert", "convert"),
         "load_npz": ("nets.convert", "load_npz"), "DeepLab": ("nets.deeplab", "DeepLab")}
_SUBMODULES = ("caffe", "convert", "deeplab", "graph", "layers", "weights")

__all__ = sorted(_LAZY) + ["deeplab"]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"nets.{name}")
    raise AttributeError(f"module 'nets' has no attribute {name!r}")
