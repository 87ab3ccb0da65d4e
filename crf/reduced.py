"""The dense CRF at a reduced resolution, for images too large to refine whole.

A dense CRF's memory and time grow with its pixels: about 0.64 GB a megapixel with 21 labels
on the host (:mod:`crf.memory`), so a photograph of 24 megapixels would need some 16 GB.
Such an image is refined at a reduced size instead (:func:`crf.deeplab_refine` with
``max_side``, ``deeplab crf --max-side``):

1. the image and the scores are shrunk by area averaging (each small pixel the mean of the
   large pixels it covers), so that the long side is ``max_side`` pixels;
2. the kernels' spatial widths, theta_alpha and theta_gamma, shrink by the same factor, so
   that they cover the same part of the picture as at full size (theta_beta is a width in
   colour and stays): :meth:`crf.Preset.scaled`;
3. the CRF runs at the small size, and its marginals Q are enlarged back bilinearly. Each
   enlarged pixel is a convex combination of small ones, so its marginals still sum to one.

What is lost is detail below the small image's pixel: a boundary is placed to within about
one small pixel, ``max(H, W) / max_side`` pixels of the original.
"""
import numpy as np


def reduced_shape(height, width, max_side):
    """``(h, w)``: the size with the long side ``max_side`` and the aspect ratio kept, or
    ``(height, width)`` if it is not longer.

    Parameters
    ----------
    height, width, max_side : int

    Returns
    -------
    tuple of two ints, each at least 1
    """
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side!r}")
    long_side = max(height, width)
    if long_side <= max_side:
        return int(height), int(width)
    return (max(1, round(height * max_side / long_side)), max(1, round(width * max_side / long_side)))


def shrink_image(image, shape):
    """An (H, W, 3) uint8 image area-averaged to ``shape`` (h, w): (h, w, 3) uint8."""
    from PIL import Image  # here, not at the top: ``import crf`` does not need it
    h, w = shape
    small = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize((w, h), Image.Resampling.BOX)
    return np.asarray(small)


def _resize_planes(planes, shape, resample):
    """Each (H, W) plane of an (L, H, W) float32 array resized to ``shape`` with Pillow's filter
    ``resample`` ("BOX" or "BILINEAR"): (L, h, w) float32."""
    from PIL import Image
    resample = getattr(Image.Resampling, resample)
    h, w = shape
    out = np.empty((planes.shape[0], h, w), np.float32)
    for lab, plane in enumerate(planes):
        out[lab] = np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
                              .resize((w, h), resample))
    return out


def shrink_scores(scores, shape):
    """(L, H, W) scores area-averaged to ``shape`` (h, w): (L, h, w) float32."""
    return _resize_planes(np.asarray(scores), shape, "BOX")


def enlarge_marginals(q, shape):
    """(L, h, w) marginals enlarged bilinearly to ``shape`` (H, W): (L, H, W) float32; ``q``
    itself if it has that size already.

    Every output pixel is a weighted mean of up to four input pixels, its weights summing to
    one, so each pixel's marginals still sum to one (to float32 rounding).
    """
    if tuple(q.shape[1:]) == tuple(shape):
        return q
    return _resize_planes(np.asarray(q), shape, "BILINEAR")
