"""Converting a caffemodel into a plain ``.npz`` that :class:`nets.Net` loads without Caffe's formats.

The archive holds:

* ``__format__``: ``"deeplab-numba-net/1"``;
* ``__prototxt__``: the network definition as prototxt text (written with
  :func:`nets.caffe.format_prototxt`, in the dialect it was read in);
* ``<layer name>/<blob index>``: every blob the net needs, float32, in Caffe's
  shapes (a V1 file's legacy 4-D blobs are reshaped: ``(1, 1, 1, 64)`` -> ``(64,)``).

Only arrays of numbers are stored, so the file loads with ``allow_pickle=False``.
Checks, as Caffe makes them when it copies weights by layer name
(``Net::CopyTrainedLayersFrom``): every blob the net needs is present with the
right shape; the caffemodel's layers that the net lacks are listed in a warning
(an error with ``strict=True``); blobs shared by ``param { name }`` (the DeepLab-v2
MSC towers) must be identical in every copy and are stored once, under the first
layer that uses them.
"""
import os
import sys
import types
import warnings
import zipfile

import numpy as np

from nets.caffe import parse_prototxt, read_caffemodel, read_prototxt
from nets.caffe.prototxt import format_prototxt
from nets.imageio import atomic_write
from nets.weights import sharing_groups, weights_by_layer

FORMAT = "deeplab-numba-net/1"


def convert(caffemodel, prototxt, out, strict=False, input_shape=None, **template_values):
    """Write a converted ``.npz`` for a caffemodel and the network that uses it.

    Parameters
    ----------
    caffemodel : str or PathLike
        V1 or new dialect.
    prototxt : str or PathLike
        The network to run (e.g. DeepLab's ``test.prototxt``); its TEST phase is kept.
    out : str or PathLike
        The ``.npz`` to write (atomically: a complete file or none).
    strict : bool
        Make blobs of layers the net does not have an error instead of a warning.
    input_shape : tuple of int, optional
        ``(N, C, H, W)`` used to work out the blob shapes the net needs; by default the
        declared one (``input_dim``, an Input layer, or ImageSegData's crop).
    **template_values
        Values for ``${...}`` placeholders (``NUM_LABELS=21``, ``EXP="voc12"`` by default).

    Returns
    -------
    dict of str to tuple of int
        The stored blobs' shapes by key (``"conv1_1/0"``).

    Raises
    ------
    ValueError
        A blob missing or of the wrong shape (naming the layer and both shapes), shared
        copies that differ (naming both layers), unused layers with ``strict``.
    """
    from nets.graph import Net
    spec = read_prototxt(prototxt, **template_values)
    model = read_caffemodel(caffemodel)
    available = weights_by_layer(model)
    net = Net(spec, available)
    checked = _checked_blobs(net, input_shape)
    used = {layer.name for layer in net.spec.layers}
    unused = sorted(name for name in available if name not in used)
    if unused:
        message = (f"{os.fspath(caffemodel)}: the weights of {len(unused)} layers that the net does not have "
                   f"were left out (Caffe matches weights by layer name): {unused}")
        if strict:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    arrays = {"__format__": np.array(FORMAT), "__prototxt__": np.array(format_prototxt(net.spec))}
    stored = set()
    groups = sharing_groups([s.layer for s in net._steps])
    for step in net._steps:
        layer = step.layer
        for index, blob in enumerate(checked.get(layer.name, [])):
            name = layer.param_names[index] if index < len(layer.param_names) else ""
            if name and len(groups.get(name, [])) > 1:
                if name in stored:
                    continue
                stored.add(name)
            arrays[f"{layer.name}/{index}"] = np.ascontiguousarray(blob, dtype=np.float32)
    with atomic_write(out) as f:
        np.savez(f, **arrays)
    return {k: v.shape for k, v in arrays.items() if not k.startswith("__")}


def _checked_blobs(net, input_shape):
    """Every layer's blobs in Caffe's shapes, checked for the given or declared input shape."""
    if input_shape is None:
        declared = [net._input_defaults.get(name) for name in net.inputs]
        if any(d is None for d in declared):
            raise ValueError(f"the net declares no complete input shape ({dict(zip(net.inputs, declared))}); "
                             f"pass input_shape=(N, C, H, W)")
        shapes = dict(zip(net.inputs, declared))
    else:
        shapes = {net.inputs[0]: tuple(input_shape)}
    net.shapes(shapes, context=f"for input shapes {shapes}")
    return net._checked


def load_npz(path):
    """Read a converted ``.npz``: the network and its blobs by layer name.

    Returns
    -------
    spec : NetSpec
    weights : dict of str to list of ndarray or None
        ``None`` marks a blob stored under another layer that shares it.

    Raises
    ------
    ValueError
        Not a converted net, an array holding Python objects (refused: loading them
        would need pickle), or a blob that is not a float array.
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive: {exc}") from None
    with archive:
        keys = list(archive.files)
        if "__prototxt__" not in keys:
            raise ValueError(f"{path}: expected a net converted by nets.convert (an .npz with "
                             f"'__prototxt__' and '<layer>/<index>' arrays); found keys {keys[:10]}")
        arrays = {}
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                raise ValueError(f"{path}: array {key!r} holds Python objects, which are refused "
                                 f"(loading them would need pickle): {exc}") from None
    text = arrays.pop("__prototxt__")
    arrays.pop("__format__", None)
    if text.dtype.kind != "U" or text.ndim != 0:
        raise ValueError(f"{path}: '__prototxt__' must be a text scalar, got dtype {text.dtype}, "
                         f"shape {text.shape}")
    spec = parse_prototxt(str(text))
    weights = {}
    for key, array in arrays.items():
        layer, sep, index = key.rpartition("/")
        if not sep or not index.isdigit():
            raise ValueError(f"{path}: unexpected array {key!r}; blobs are named '<layer>/<index>'")
        if array.dtype.kind != "f":
            raise ValueError(f"{path}: blob {key!r} must be a float array, got dtype {array.dtype}")
        blobs = weights.setdefault(layer, [])
        blobs.extend([None] * (int(index) + 1 - len(blobs)))
        blobs[int(index)] = array
    return spec, weights


class _CallableModule(types.ModuleType):
    """``nets.convert`` is both this module and its main function.

    Importing the submodule ``nets.convert`` makes Python bind the module to the
    package attribute of the same name, which would hide the function; calling the
    module calls :func:`convert`, so ``nets.convert(caffemodel, prototxt, out)``
    works either way.
    """

    def __call__(self, *args, **kwargs):
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
