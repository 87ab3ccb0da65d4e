"""The Caffe engine: runs a prototxt-defined network layer by layer over named blobs.

* :class:`Net` (:mod:`.net`): load, reshape to any input, forward on any backend;
* :mod:`.ops`: what each Caffe layer type needs, outputs and computes inside a net;
* :func:`load_weights` and blob matching by layer name with sharing (:mod:`.weights`);
* :func:`.convert.convert`: a caffemodel and its prototxt -> a plain ``.npz``
  (``nets.convert`` at the top);
* :func:`deploy_spec` (:mod:`.deploy`): a deploy twin for other Caffe importers;
* :func:`.random_weights.random_weights`: seeded stand-ins for trained weights.

It sits on :mod:`nets.caffe` (file formats) and :mod:`nets.layers` (layer maths), and knows
nothing of DeepLab's models or of the application.
"""
from .deploy import deploy_spec
from .net import Net
from .weights import load_weights

__all__ = ["Net", "deploy_spec", "load_weights"]
