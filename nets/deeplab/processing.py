"""DeepLab's image processing around the network: preprocessing, scales, labels.

The pipeline (Chen et al., TPAMI 2018, Sec. 3 and 4)::

    RGB image -> [resize rule] -> preprocess (BGR, minus mean, pad to the crop size)
              -> network (optionally at several scales, MAX-fused) -> x8 Interp
              -> crop to the image -> softmax | dense CRF -> argmax -> labels

This module holds the steps that are plain arrays in, arrays out; :mod:`nets.deeplab.model`
strings them together.

Preprocessing (DeepLab's test ``transform_param`` and data layer)
    RGB uint8 -> BGR, subtract the means B 104.008, G 116.669, R 122.675 (no /255),
    pad bottom and right to the crop size (513) with the mean colour (0 after the
    subtraction).

Images larger than the crop size
    DeepLab's test nets take at most ``crop x crop`` pixels (its Caffe data layer
    would take a centre crop). Here such an image is never cropped: it is resized
    so that its long side equals the crop size (:func:`resize_rule`).

Scales (``scales=(1, 0.75, 0.5)``, single-scale nets only)
    As the v2 MSC prototxt does it: the padded ``crop x crop`` input is resized by a
    Caffe Interp to ``floor((crop - 1) s) + 1`` pixels (513 -> 385 and 257, exactly
    the MSC net's ``shrink 4 zoom 3`` and ``shrink 2``); the net runs up to the blob
    below its final Interp; each score map is Interp'ed to the scale-1 score map's
    size; the maps are fused by an elementwise MAX; the final Interp (zoom 8) runs
    on the fused map (:func:`forward_scores`).

Mirror image (``flip=True``; test-time augmentation, not part of DeepLab v1/v2's protocol)
    The net also runs on the image mirrored left to right (padded on the right like the
    image itself, so that it sees the same kind of canvas); its scores, cropped to the
    image and mirrored back, are fused with the image's by the same elementwise MAX
    (:func:`fuse_mirrored`). The fusion is at full resolution: at the scores' stride of 8
    the two grids line up only when the width is one more than a multiple of 8. The whole
    pipeline is then mirror-symmetric: the mirror image gets the mirrored labels.

References
----------
L.-C. Chen et al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully
Connected CRFs", ICLR 2015; "DeepLab: Semantic Image Segmentation with Deep Convolutional
Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2018, Sec. 3.1-3.3 and 4.
"""
import numpy as np

from nets import layers as L
from nets.deeplab.models import CROP_SIZE, MEAN_BGR

#: Most labels a label map holds: labels are uint8, as in the VOC PNG files (255 is void).
MAX_LABELS = 256


def preprocess(image, crop_size=CROP_SIZE):
    """DeepLab's input blob for an RGB image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8, RGB
    crop_size : int
        The side the image is padded to (bottom and right). An image larger than
        that is padded to its own size on that axis instead (the net is reshaped
        to any input; DeepLab's Caffe would have taken a centre crop).

    Returns
    -------
    ndarray of shape (1, 3, max(H, crop), max(W, crop)), float32
        BGR minus :data:`MEAN_BGR`, zero (the mean colour) in the padding.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0-255, as DeepLab read it with OpenCV), got dtype {image.dtype}")
    h, w = image.shape[:2]
    out = np.zeros((1, 3, max(h, crop_size), max(w, crop_size)), np.float32)
    bgr = image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)  # (3, H, W)
    out[0, :, :h, :w] = bgr - np.array(MEAN_BGR, np.float32)[:, None, None]
    return out


def label_map(scores):
    """The labels of scores or marginals, with Caffe's ArgMax tie rule (the highest label among equals).

    Parameters
    ----------
    scores : ndarray of shape (L, H, W), L <= 256

    Returns
    -------
    ndarray of shape (H, W), uint8
    """
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 3 or scores.shape[0] > MAX_LABELS:
        raise ValueError(f"scores must be (L, H, W) with at most {MAX_LABELS} labels (label maps are uint8), "
                         f"got shape {scores.shape}")
    return L.argmax(scores[None], axis=1, backend="numpy")[0, 0].astype(np.uint8)


def crop_scores(scores, height, width):
    """The top-left ``height`` x ``width`` of ``(L, H', W')`` scores (the image under the padding)."""
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 3 or scores.shape[1] < height or scores.shape[2] < width:
        raise ValueError(f"scores must be (L, H', W') with H' >= {height} and W' >= {width}, got {scores.shape}")
    return np.ascontiguousarray(scores[:, :height, :width])


def fuse_mirrored(scores, mirrored, height, width):
    """The MAX of an image's scores and of its mirror image's, mirrored back (module docstring).

    Parameters
    ----------
    scores, mirrored : ndarray of shape (B, L, H', W'), float32
        The full-resolution scores of the padded images and of their left-right mirror images
        (padded the same way, bottom and right), H' >= height and W' >= width.
    height, width : int
        The images' size within the canvas.

    Returns
    -------
    ndarray of shape (B, L, height, width), float32
        ``max(scores[..., x], mirrored[..., width - 1 - x])`` over the image (NaN wins, as in
        ``np.maximum``).
    """
    scores, mirrored = np.asarray(scores, np.float32), np.asarray(mirrored, np.float32)
    if scores.ndim != 4 or scores.shape != mirrored.shape or scores.shape[2] < height or scores.shape[3] < width:
        raise ValueError(f"scores and mirrored scores must be (B, L, H', W') of one shape with H' >= {height} and "
                         f"W' >= {width}, got {scores.shape} and {mirrored.shape}")
    return np.maximum(scores[:, :, :height, :width], mirrored[:, :, :height, width - 1::-1])  # (B, L, h, w)


def softmax(scores):
    """Softmax over the labels of ``(L, H, W)`` scores, as Caffe's Softmax layer: ``(L, H, W)`` float32."""
    return L.softmax(np.asarray(scores, np.float32)[None], axis=1, backend="numpy")[0]


def resize_rule(height, width, crop_size):
    """The working size of an image: itself, or the long side resized to ``crop_size``.

    The short side is rounded, and at least 1.
    """
    if max(height, width) <= crop_size:
        return height, width
    ratio = crop_size / max(height, width)
    return (crop_size if height >= width else max(1, round(height * ratio)),
            crop_size if width > height else max(1, round(width * ratio)))


def parse_scales(scales):
    """``"1,0.75,0.5"`` or a sequence -> a tuple of positive floats."""
    if isinstance(scales, str):
        try:
            scales = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"scales must be comma-separated numbers such as 1,0.75,0.5, got {scales!r}") from None
    scales = tuple(float(s) for s in scales)
    if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales}")
    return scales


def forward_scores(net, data, scores, scales=(1.0,), backend="auto"):
    """Full-resolution scores at one or several input scales (MSC's MAX fusion, module docstring).

    Parameters
    ----------
    net : nets.Net
    data : ndarray or CUDA device array of shape (B, 3, S, S), float32
        The preprocessed inputs (a device array keeps every step on the GPU).
    scores : str
        The blob holding the full-resolution scores, written by an Interp layer when
        ``scales`` has more than one scale.
    scales : tuple of float
    backend : {"numpy", "cpu", "cuda", "auto"}

    Returns
    -------
    ndarray (a device array for device data) of shape (B, L, S, S), float32
    """
    if tuple(scales) == (1.0,):
        return net.forward(data, outputs=[scores], backend=backend)[scores]
    final = [layer for layer in net.spec.layers if layer.type == "Interp" and scores in layer.tops]
    if not final:
        raise ValueError(f"scales need the scores {scores!r} to come from an Interp layer")
    final = final[-1]
    below = final.bottoms[0]
    base = net.infer_shapes({net.inputs[0]: data.shape}, check=False)[below][2:]
    side = data.shape[2]
    fused = None
    for s in scales:
        size = int(np.floor((side - 1) * s)) + 1
        x = data if size == side else L.interp(data, height=size, width=size, backend=backend)
        y = net.forward(x, outputs=[below], backend=backend)[below]
        if tuple(y.shape[2:]) != tuple(base):
            y = L.interp(y, height=base[0], width=base[1], backend=backend)
        fused = y if fused is None else L.eltwise([fused, y], "max", backend=backend)  # as fc_fusion
    p = final.params.get("interp_param", {})
    return L.interp(fused, zoom_factor=p.get("zoom_factor"), shrink_factor=p.get("shrink_factor"),
                    height=p.get("height"), width=p.get("width"), pad_beg=p.get("pad_beg", 0),
                    pad_end=p.get("pad_end", 0), dialect="v1" if net.spec.dialect == "v1" else "v2",
                    backend=backend)
