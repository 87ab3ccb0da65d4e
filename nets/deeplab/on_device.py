"""DeepLab's pipeline kept on the GPU: the steps around the network, as CUDA kernels.

With ``backend="cuda"``, :meth:`nets.deeplab.Model.segment_batch` uploads the images once
(uint8, a quarter of the float32 input), and everything after that stays on the device:

    images (B, H, W, 3) uint8 -> preprocess (this module) -> network -> x8 Interp
        -> crop / CRF unary (crf.cuda) -> dense CRF (crf.cuda) or softmax -> argmax (Caffe's rule)

Only the labels come back, (H, W) per image, and the probabilities and scores when
asked. Imported only for the CUDA backend (it imports ``numba.cuda``).
"""
import numpy as np
from numba import cuda

from crf import cuda as crf_cuda
from nets import layers as L
from nets.deeplab.models import MEAN_BGR
from nets.layers import config


def _grid(n):
    """Ceil-divided, capped, grid-stride beyond: the launch shape of the layers' kernels."""
    threads = config.CUDA_THREADS
    return max(1, min(config.CUDA_MAX_BLOCKS, (n + threads - 1) // threads)), threads


@cuda.jit(cache=True)
def _preprocess_kernel(images, mean, out):
    """``out[b, c, y, x] = RGB image[b, y, x, 2 - c] - mean[c]`` under the image, 0 in the padding."""
    n_img, h, w, _ = images.shape
    side_h, side_w = out.shape[2], out.shape[3]
    plane = side_h * side_w
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n_img * 3 * plane, stride):
        b = idx // (3 * plane)
        rest = idx - b * 3 * plane
        c = rest // plane
        rest -= c * plane
        y = rest // side_w
        x = rest - y * side_w
        if y < h and x < w:
            out[b, c, y, x] = np.float32(images[b, y, x, 2 - c]) - mean[c]  # BGR, as Caffe's OpenCV read
        else:
            out[b, c, y, x] = np.float32(0.0)  # the mean colour, after the subtraction


def preprocess(images, crop_size):
    """:func:`nets.deeplab.processing.preprocess` of a batch, on the GPU.

    Parameters
    ----------
    images : device array of shape (B, H, W, 3), uint8, RGB
    crop_size : int

    Returns
    -------
    device array of shape (B, 3, max(H, crop), max(W, crop)), float32
    """
    n_img, h, w, _ = images.shape
    out = cuda.device_array((n_img, 3, max(h, crop_size), max(w, crop_size)), np.float32)
    mean = cuda.to_device(np.array(MEAN_BGR, np.float32))
    _preprocess_kernel[_grid(out.size)](images, mean, out)
    return out


def crop(scores, height, width):
    """The top-left ``height`` x ``width`` of device ``(L, H', W')`` scores, a new contiguous array."""
    return crf_cuda.crop(scores, height, width)


@cuda.jit(cache=True)
def _fuse_mirrored_kernel(scores, mirrored, out):
    """``out[b, c, y, x] = max(scores[b, c, y, x], mirrored[b, c, y, w - 1 - x])``, NaN winning."""
    n_img, labels, h, w = out.shape
    plane = h * w
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n_img * labels * plane, stride):
        bc = idx // plane
        b = bc // labels
        c = bc - b * labels
        rest = idx - bc * plane
        y = rest // w
        x = rest - y * w
        a = scores[b, c, y, x]
        m = mirrored[b, c, y, w - 1 - x]
        out[b, c, y, x] = m if (m > a or m != m) else a


def fuse_mirrored(scores, mirrored, height, width):
    """:func:`nets.deeplab.processing.fuse_mirrored` of device (B, L, H', W') scores: a device
    (B, L, height, width) array."""
    n_img, labels = scores.shape[:2]
    out = cuda.device_array((n_img, labels, height, width), np.float32)
    _fuse_mirrored_kernel[_grid(out.size)](scores, mirrored, out)
    return out


def label_map(q):
    """:func:`nets.deeplab.processing.label_map` of device (L, H, W) scores or marginals: (H, W) uint8
    labels on the host (Caffe's ArgMax on the GPU; only the labels are copied back)."""
    index = L.argmax(q.reshape(1, *q.shape), axis=1, backend="cuda")  # (1, 1, H, W) float32, as Caffe
    return index.copy_to_host()[0, 0].astype(np.uint8)


def softmax(scores):
    """Caffe's Softmax over the labels of device (L, H, W) scores: a device (L, H, W) array."""
    return L.softmax(scores.reshape(1, *scores.shape), axis=1, backend="cuda").reshape(*scores.shape)


def upload(images):
    """(B, H, W, 3) uint8 host images -> the same on the device."""
    return cuda.to_device(np.ascontiguousarray(images))


def synchronize():
    """Wait for the GPU (so that a stage's wall time is its own)."""
    cuda.synchronize()
