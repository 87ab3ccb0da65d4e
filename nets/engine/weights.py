"""Matching learned blobs to a network's layers, as Caffe does: by layer name, with sharing.

Caffe copies trained weights into a net by **layer name** and ignores names the
net does not have (``Net::CopyTrainedLayersFrom``). Layers may share a blob by
giving it the same ``param { name: ... }``: the three DeepLab-v2 MSC towers share
every weight this way, and ``Net::ToProto`` saves a copy under each tower's name.
Copying those copies into a shared blob one after another leaves the last one, so
the result is only well defined when the copies are identical; this module
checks that they are.

Blob shapes follow Caffe's ``Blob::ShapeEquals``: the expected shape, or the
legacy 4-D shape ``(num, channels, height, width)`` that the V1 dialect writes
(the expected shape left-padded with ones, e.g. an InnerProduct weight
``(out, in)`` stored as ``(1, 1, out, in)``, a bias ``(out,)`` as ``(1, 1, 1, out)``).

:func:`load_weights` is the one reader of weight files (a ``.caffemodel`` or a
converted ``.npz``) for the whole package.
"""
import os

import numpy as np

from nets.caffe import is_npz, read_caffemodel, read_npz


def load_weights(path):
    """Read a weight file: a converted ``.npz`` or a ``.caffemodel`` (either dialect).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    spec : NetSpec or None
        The network stored with a converted ``.npz``; None for a caffemodel (what it
        stores is the *training* net, which is not the one to run).
    weights : dict of str to list of ndarray
        Blobs by layer name (see :func:`weights_by_layer`).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unreadable archive or caffemodel (:class:`~nets.caffe.CaffeFormatError`, naming
        the file and the byte offset), a folder, or a blob holding NaN or infinity.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; expected a converted .npz or a .caffemodel file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected a converted .npz or a .caffemodel)")
    if is_npz(path):
        spec, weights = read_npz(path)
        weights = weights_by_layer(weights)
    else:
        spec, weights = None, weights_by_layer(read_caffemodel(path))
    _check_finite(path, weights)
    return spec, weights


def _check_finite(path, weights):
    """Refuse a weight file with a NaN or an infinity in a blob: every output would be NaN."""
    for layer, blobs in weights.items():
        for index, blob in enumerate(blobs):
            if blob is not None and not np.isfinite(blob).all():
                bad = int(blob.size - np.isfinite(blob).sum())
                raise ValueError(f"{path}: blob {index} of layer {layer!r} holds {bad} NaN or infinite "
                                 f"value(s) of {blob.size}; expected finite weights (a damaged file?)")


def weights_by_layer(source):
    """Blobs by layer name from a caffemodel's :class:`~nets.caffe.NetSpec` or a mapping.

    Parameters
    ----------
    source : NetSpec or mapping of str to sequence of ndarray or None
        A decoded caffemodel (its layers' ``blobs``), or ``{layer name: [blob, ...]}``
        (a ``None`` entry is a blob stored under another layer sharing it).

    Returns
    -------
    dict of str to list of ndarray
        Layers without blobs are left out; when a name appears twice (a train and a
        test copy of one layer), the first copy that has blobs is used.
    """
    if source is None:
        return {}
    if hasattr(source, "layers"):
        out = {}
        for layer in source.layers:
            if layer.blobs and layer.name not in out:
                out[layer.name] = list(layer.blobs)
        return out
    return {str(name): list(blobs) for name, blobs in source.items() if blobs is not None and len(blobs)}


def sharing_groups(layers):
    """``{param name: [(layer name, blob index), ...]}`` for every named (shared) blob, in net order."""
    groups = {}
    for layer in layers:
        for index, name in enumerate(layer.param_names):
            if name:
                groups.setdefault(name, []).append((layer.name, index))
    return groups


def resolve_weights(layers, weights):
    """Each layer's blobs, shared blobs taken from whichever sharing layer has them.

    Parameters
    ----------
    layers : sequence of LayerSpec
        The layers of the net that runs (after the TEST-phase filter).
    weights : dict of str to list of ndarray
        Blobs by layer name (see :func:`weights_by_layer`).

    Returns
    -------
    dict of str to list of ndarray
        Blobs by layer name for the layers given, in blob order. A shared blob is the
        same array object in every layer that shares it. A layer whose blobs are all
        absent is left out.

    Raises
    ------
    ValueError
        Two layers sharing a blob (same ``param { name }``) carry different values for
        it; the message names both layers, the parameter name and the shapes.
    """
    shared = {}
    for param, members in sharing_groups(layers).items():
        found = None
        for layer_name, index in members:
            blobs = weights.get(layer_name, [])
            if index >= len(blobs) or blobs[index] is None:
                continue
            blob = blobs[index]
            if found is None:
                found = (layer_name, blob)
                continue
            first_layer, first = found
            if first.shape != blob.shape or not np.array_equal(first, blob):
                raise ValueError(
                    f"layers {first_layer!r} and {layer_name!r} share blob {index} "
                    f"(param name {param!r}) but their weights differ (shapes {tuple(first.shape)} and "
                    f"{tuple(blob.shape)}); Caffe would keep whichever it copied last, so the model "
                    f"is ambiguous")
        if found is not None:
            shared[param] = found[1]
    resolved = {}
    for layer in layers:
        own = list(weights.get(layer.name, []))
        names = layer.param_names
        count = max(len(own), max((i + 1 for i, n in enumerate(names) if n in shared), default=0))
        blobs = []
        for index in range(count):
            name = names[index] if index < len(names) else ""
            if name in shared:
                blobs.append(shared[name])
            else:
                blobs.append(own[index] if index < len(own) else None)
        if count:
            resolved[layer.name] = blobs
    return resolved


def shape_matches(given, expected):
    """Caffe's rule: the same shape, or the legacy 4-D form of ``expected``."""
    given, expected = tuple(given), tuple(expected)
    if given == expected:
        return True
    return len(given) == 4 and len(expected) <= 4 and given == (1,) * (4 - len(expected)) + expected


def check_blobs(layer, blobs, expected, context=""):
    """Check a layer's blobs against the shapes the net needs; return them in those shapes.

    Parameters
    ----------
    layer : LayerSpec
    blobs : list of ndarray (or None for an absent blob), or None
    expected : list of tuple of int
        The shapes the layer needs, in blob order.
    context : str
        Appended to messages, e.g. ``"for input (1, 3, 75, 100)"``.

    Returns
    -------
    list of ndarray
        float32 arrays of exactly the expected shapes (views where possible).

    Raises
    ------
    ValueError
        A blob missing, one too many, or of another shape: the message names the
        layer, the blob and both shapes.
    """
    blobs = list(blobs or [])
    where = f"layer {layer.name!r} ({layer.type})"
    suffix = f" {context}" if context else ""
    if len(blobs) > len(expected):
        raise ValueError(f"{where}: the weights hold {len(blobs)} blobs of shapes "
                         f"{[None if b is None else tuple(b.shape) for b in blobs]}, but the layer "
                         f"takes {len(expected)} of shapes {[tuple(e) for e in expected]}{suffix}")
    out = []
    for index, shape in enumerate(expected):
        blob = blobs[index] if index < len(blobs) else None
        if blob is None:
            given = [None if b is None else tuple(b.shape) for b in blobs]
            raise ValueError(f"{where}: blob {index} of shape {tuple(shape)} is missing; expected "
                             f"blobs of shapes {[tuple(e) for e in expected]}, the weights give "
                             f"{given if given else 'none'}{suffix}")
        if not shape_matches(blob.shape, shape):
            raise ValueError(f"{where}: blob {index} has shape {tuple(blob.shape)}, expected "
                             f"{tuple(shape)}{suffix}")
        array = np.asarray(blob)
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        out.append(array.reshape(shape))
    return out
