"""Reading and writing ``.caffemodel`` files (binary NetParameter), both dialects.

A caffemodel is one protobuf ``NetParameter``: Caffe's ``Net::ToProto`` saves every
layer of the net that was trained, with its parameter messages and its learned
blobs. Old files (Caffe before 2015, DeepLab v1) keep the layers in field 2
(``layers``, V1 dialect, enum types, 4-D blobs); newer ones in field 100 (``layer``,
string types, blobs with a ``shape``).

Reading maps the file into memory (``mmap``) and decodes blob data with
``np.frombuffer`` over the map: the weights are never copied, so a 500 MB file
is not held twice; the arrays are read-only views that keep the map alive.
"""
import mmap
import os

from .atomic import atomic_write
from .codec import decode_message, encode_message
from .errors import CaffeFormatError
from .spec import net_from_raw, net_to_raw


def decode_caffemodel(buffer):
    """Decode the bytes of a caffemodel into a :class:`~nets.caffe.spec.NetSpec`.

    Parameters
    ----------
    buffer : bytes-like (bytes, memoryview, mmap)
        Blob arrays are views of this buffer.

    Raises
    ------
    CaffeFormatError
        The bytes are not a Caffe net: truncated, corrupt, or holding no layers.
    """
    size = len(buffer)
    if size == 0:
        raise CaffeFormatError("byte 0: the file is empty; expected a Caffe NetParameter")
    spec = net_from_raw(decode_message(buffer, 0, size, "NetParameter"))
    if not spec.layers:
        raise CaffeFormatError(f"byte {size}: the data ends without a layer (expected field 2 'layers' "
                               f"or field 100 'layer'); this is not a Caffe model")
    return spec


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"  # the first line of a Git LFS pointer file


def read_caffemodel(path):
    """Read a ``.caffemodel`` (V1 or new dialect) into a :class:`~nets.caffe.spec.NetSpec`.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    NetSpec
        Every saved layer, normalised (see :mod:`nets.caffe.spec`), with its blobs as
        read-only float32 (or float64 for ``double_data``) arrays mapped from the file.

    Raises
    ------
    CaffeFormatError
        Naming the file, the byte offset and what was expected there.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CaffeFormatError(f"{path}: byte 0: the file is empty; expected a Caffe NetParameter")
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise CaffeFormatError(f"{path}: a Git LFS pointer ({size} bytes of text), not the weights it "
                                   f"points to; fetch them with 'git lfs pull'")
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        spec = decode_caffemodel(buffer)
    except CaffeFormatError as exc:
        raise CaffeFormatError(f"{path}: {exc}") from None
    return spec


def encode_caffemodel(spec, weights=None, dialect="new", pack=None):
    """Encode a net and its weights; returns a :class:`~nets.caffe.wire.Encoder`.

    See :func:`write_caffemodel` for the parameters.
    """
    weights = dict(weights or {})
    names = {layer.name for layer in spec.layers}
    missing = sorted(set(weights) - names)
    if missing:
        raise CaffeFormatError(f"weights given for layers the net does not have: {missing}")
    return encode_message("NetParameter", net_to_raw(spec, dialect, weights), pack)


def write_caffemodel(path, spec, weights=None, dialect="new", pack=None):
    """Write a caffemodel that Caffe (and OpenCV's Caffe importer) can read.

    Parameters
    ----------
    path : str or PathLike
        Written atomically (a temporary file renamed over ``path``).
    spec : NetSpec
        The network; its layers' parameter messages are written as Caffe would.
    weights : dict of str to list of ndarray, optional
        Blobs by layer name, replacing the layers' own ``blobs``.
    dialect : {"new", "v1"}
        ``"new"``: ``layer`` (field 100), string types, blobs with ``shape``.
        ``"v1"``: ``layers`` (field 2), BVLC's enum values (DeepLab v1's for its own
        types: ``INTERP`` = 41, ``IMAGE_SEG_DATA`` = 39), blobs with 4-D
        num/channels/height/width (an InnerProduct weight ``(out, in)`` is written
        ``(1, 1, out, in)``, as real Caffe did) and dilation written as DeepLab v1's
        ``hole``. Types without a V1 enum value (BatchNorm, Scale, Input, ...) are refused.
    pack : bool, optional
        None: repeated numbers packed where Caffe packs them; True/False: all packed / unpacked.

    Raises
    ------
    CaffeFormatError
        A layer or field that the dialect cannot express; weights for unknown layers.
    """
    encoder = encode_caffemodel(spec, weights, dialect, pack)
    with atomic_write(path) as f:
        encoder.write_to(f)
