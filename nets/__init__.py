"""DeepLab networks: Caffe files read by hand, Caffe layer semantics, the forward pass, the CLI.

The subpackages form layers that import downwards only::

    nets.app       the ``deeplab`` command: files and folders, evaluate, refine, demo, info, check
      nets.deeplab   the DeepLab models by name, their pipeline, one Model/segment API
        nets.engine    runs a Caffe net layer by layer: Net, weights, conversion, deploy twins
          nets.layers    Caffe layer maths (pooling, Interp, BatchNorm, ...), three tiers each
          nets.caffe     Caffe files by hand: protobuf, prototxt, caffemodel, the .npz format

(and :mod:`atrous`, :mod:`crf` below them all). The main names load on first use, so
``import nets`` stays light: no Numba kernels compiled, no ``numba.cuda`` loaded.

* :class:`nets.Net`: run a Caffe network (``Net.load(path)``, ``net.forward(data)``);
* :func:`nets.convert`: a caffemodel and its prototxt -> a plain ``.npz``;
* :class:`nets.Model` and :func:`nets.segment`: a DeepLab model by name or file, an image
  in, labels out (:mod:`nets.deeplab`).
"""
import importlib
import os

# Before NumPy loads OpenBLAS (``import nets`` comes first in the deeplab command and its
# worker processes): BLAS threads sleep as soon as a product ends instead of spinning for
# 2^28 cycles against the Numba kernels that follow (see atrous/__init__.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_LAZY = {"Net": ("nets.engine.net", "Net"), "convert": ("nets.engine.convert", "convert"),
         "load_weights": ("nets.engine.weights", "load_weights"), "Model": ("nets.deeplab.model", "Model"),
         "Segmentation": ("nets.deeplab.model", "Segmentation"), "segment": ("nets.deeplab.model", "segment")}
_SUBMODULES = ("app", "caffe", "deeplab", "engine", "layers")

__all__ = sorted(_LAZY) + list(_SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"nets.{name}")
    raise AttributeError(f"module 'nets' has no attribute {name!r}")
