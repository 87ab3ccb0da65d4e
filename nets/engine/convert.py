"""Converting a caffemodel into a plain ``.npz`` that :class:`nets.Net` loads without Caffe's formats.

The archive (:mod:`nets.caffe.npz`) holds the network as prototxt text and every blob
the net needs, float32, in Caffe's shapes (a V1 file's legacy 4-D blobs are reshaped:
``(1, 1, 1, 64)`` -> ``(64,)``). Only arrays of numbers are stored, so the file loads
with ``allow_pickle=False``.

Checks, as Caffe makes them when it copies weights by layer name
(``Net::CopyTrainedLayersFrom``): every blob the net needs is present with the
right shape; the caffemodel's layers that the net lacks are listed in a warning
(an error with ``strict=True``); blobs shared by ``param { name }`` (the DeepLab-v2
MSC towers) must be identical in every copy and are stored once, under the first
layer that uses them.
"""
import os
import warnings

from nets.caffe import read_prototxt, write_npz
from nets.engine.net import Net
from nets.engine.weights import load_weights, sharing_groups


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
    spec = read_prototxt(prototxt, **template_values)
    _, available = load_weights(caffemodel)
    net = Net(spec, available)
    checked = net.checked_weights(None if input_shape is None else {net.inputs[0]: tuple(input_shape)})
    used = {layer.name for layer in net.spec.layers}
    unused = sorted(name for name in available if name not in used)
    if unused:
        message = (f"{os.fspath(caffemodel)}: the weights of {len(unused)} layers that the net does not have "
                   f"were left out (Caffe matches weights by layer name): {unused}")
        if strict:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    blobs, stored = {}, set()
    groups = sharing_groups(net.layers)
    for layer in net.layers:
        for index, blob in enumerate(checked.get(layer.name, [])):
            name = layer.param_names[index] if index < len(layer.param_names) else ""
            if name and len(groups.get(name, [])) > 1:
                if name in stored:
                    continue
                stored.add(name)
            blobs[f"{layer.name}/{index}"] = blob
    write_npz(out, net.spec, blobs)
    return {key: blob.shape for key, blob in blobs.items()}
