"""The one error class of the Caffe readers and writers."""


class CaffeFormatError(ValueError):
    """A Caffe file (binary ``.caffemodel`` or text ``.prototxt``) that cannot be read or written.

    The message always says where the problem is (the byte offset in a binary
    file, the line and column in a text file, or the layer name) and what was
    expected there. It is a ``ValueError``, so callers that already catch bad
    values catch it too.
    """
