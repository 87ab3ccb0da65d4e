"""The lattice filter and the mean-field update on a CUDA GPU.

The lattice is built on the CPU (:func:`crf.lattice.build`) and uploaded once;
every filtering then runs on the device:

splat    one thread per (vertex, channel): a gather over the vertex's CSR
         entries (``starts``, ``splat_point``, ``splat_weight``), so no atomics;
blur     one thread per (vertex, channel) and axis: ``v + 0.5 (v_n1 + v_n2)``,
         axes 0..d in order (d..0 for the transpose), row M kept at zero;
slice    one thread per (point, channel): ``alpha sum_k w_k v[vertex_k]``,
         times the normalisation ``post`` if given;
message  one thread per (point, label): ``energy = +-base - w (N K Q) mu``;
softmax  one thread per point over its labels.

Loops are grid-stride with ceil-divided grids. No kernel uses shared memory.
Arrays keep the CPU layout: values (N, C), lattice values (M+1, C), float32.

This module is imported lazily (by ``backend="cuda"`` only), so ``import crf``
never loads ``numba.cuda``.
"""
import math

import numpy as np
from numba import cuda

from crf import config
from crf.backend import is_device_array
from crf.lattice_reference import slice_alpha


def _grid(n):
    threads = config.CUDA_THREADS
    return max(1, min(config.CUDA_MAX_BLOCKS, (n + threads - 1) // threads)), threads


@cuda.jit(cache=True)
def _splat_kernel(values, pre, starts, points, point_weights, lat):
    m = starts.shape[0] - 1
    c = values.shape[1]
    scaled = pre.shape[0] > 0
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, (m + 1) * c, stride):
        v = idx // c
        ch = idx - v * c
        acc = np.float32(0.0)
        if v < m:
            for e in range(starts[v], starts[v + 1]):
                p = points[e]
                w = point_weights[e]
                if scaled:
                    w = w * pre[p]
                acc += w * values[p, ch]
        lat[v, ch] = acc  # row m: the absent neighbour, zero


@cuda.jit(cache=True)
def _blur_kernel(src, n1, n2, dst):
    m = n1.shape[0]
    c = src.shape[1]
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, (m + 1) * c, stride):
        v = idx // c
        ch = idx - v * c
        if v < m:
            dst[v, ch] = src[v, ch] + np.float32(0.5) * (src[n1[v], ch] + src[n2[v], ch])
        else:
            dst[v, ch] = np.float32(0.0)


@cuda.jit(cache=True)
def _slice_kernel(lat, offsets, weights, alpha, post, out):
    n, d1 = offsets.shape
    c = lat.shape[1]
    scaled = post.shape[0] > 0
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * c, stride):
        p = idx // c
        ch = idx - p * c
        acc = np.float32(0.0)
        for k in range(d1):
            acc += weights[p, k] * alpha * lat[offsets[p, k], ch]
        if scaled:
            acc *= post[p]
        out[p, ch] = acc


@cuda.jit(cache=True)
def _message_kernel(qf, w, kind, mu, base, base_sign, energy):
    n, n_labels = qf.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for idx in range(start, n * n_labels, stride):
        p = idx // n_labels
        lab = idx - p * n_labels
        if kind == 0:
            message = -w * mu[0, 0] * qf[p, lab]  # Potts: + w s (N K Q), the constant dropped
        elif kind == 1:
            message = w * mu[0, lab] * qf[p, lab]
        else:
            acc = np.float32(0.0)
            for k in range(n_labels):
                acc += qf[p, k] * mu[k, lab]
            message = w * acc
        energy[p, lab] = base_sign * base[p, lab] - message


@cuda.jit(cache=True)
def _softmax_kernel(energy, sign, out):
    n, n_labels = energy.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for p in range(start, n, stride):
        top = sign * energy[p, 0]
        for lab in range(1, n_labels):
            top = max(top, sign * energy[p, lab])
        total = np.float32(0.0)
        for lab in range(n_labels):
            e = math.exp(sign * energy[p, lab] - top)
            out[p, lab] = e
            total += e
        for lab in range(n_labels):
            out[p, lab] = out[p, lab] / total


_EMPTY = np.empty(0, np.float32)


def _on_device(a):
    """A CUDA device array (the simulator's arrays lack ``__cuda_array_interface__``)."""
    return is_device_array(a) or hasattr(a, "copy_to_host")


def _require_gpu():
    if not cuda.is_available():  # true in the simulator as well
        raise ValueError("backend='cuda' needs a CUDA GPU, and numba.cuda.is_available() is false; "
                         "use backend='cpu' (or 'auto', which picks the GPU only when one works)")


class DeviceLattice:
    """A lattice's arrays on the device (uploaded once)."""

    def __init__(self, lattice):
        _require_gpu()
        self.lattice = lattice
        self.offsets = cuda.to_device(lattice.offsets)
        self.weights = cuda.to_device(lattice.weights)
        self.n1 = cuda.to_device(lattice.n1)
        self.n2 = cuda.to_device(lattice.n2)
        self.starts = cuda.to_device(lattice.starts)
        self.splat_point = cuda.to_device(lattice.splat_point)
        self.splat_weight = cuda.to_device(lattice.splat_weight)
        self.alpha = slice_alpha(lattice.d)
        self.empty = cuda.to_device(_EMPTY)
        self._scratch = {}

    def scratch(self, channels):
        if channels not in self._scratch:
            shape = (self.lattice.n_vertices + 1, channels)
            self._scratch[channels] = (cuda.device_array(shape, np.float32),
                                       cuda.device_array(shape, np.float32))
        return self._scratch[channels]

    def filter(self, values, out, pre=None, post=None, reverse=False):
        """Device (N, C) values -> device (N, C) ``out`` = post * K (pre * values)."""
        m, c = self.lattice.n_vertices, values.shape[1]
        lat, tmp = self.scratch(c)
        grid = _grid((m + 1) * c)
        _splat_kernel[grid](values, self.empty if pre is None else pre, self.starts, self.splat_point,
                            self.splat_weight, lat)
        d1 = self.lattice.d + 1
        for j in (range(d1 - 1, -1, -1) if reverse else range(d1)):
            _blur_kernel[grid](lat, self.n1[j], self.n2[j], tmp)
            lat, tmp = tmp, lat
        _slice_kernel[_grid(values.shape[0] * c)](lat, self.offsets, self.weights, self.alpha,
                                                  self.empty if post is None else post, out)
        return out


def lattice_filter(lattice, values, reverse=False):
    """:meth:`crf.lattice.Lattice.filter` on the GPU.

    Parameters
    ----------
    lattice : crf.lattice.Lattice
    values : ndarray or CUDA device array of shape (N, C), float32
        Host arrays come checked by the caller (:meth:`crf.lattice.Lattice.filter`).
    reverse : bool

    Returns
    -------
    The filtered (N, C) float32 values: a device array for a device array in,
    else a NumPy array.
    """
    on_device = _on_device(values)
    if on_device:
        if values.ndim != 2 or values.shape[0] != lattice.n_points or values.dtype != np.float32:
            raise ValueError(f"values must be a float32 device array of shape (N={lattice.n_points}, C), "
                             f"got {values.shape} {values.dtype}")
        d_values = values
    else:
        d_values = cuda.to_device(np.ascontiguousarray(values, dtype=np.float32))
    out = cuda.device_array(d_values.shape, np.float32)
    lattice.on_device().filter(d_values, out, reverse=reverse)
    return out if on_device else out.copy_to_host()


class MeanFieldRunner:
    """The mean-field loop of :class:`crf.DenseCRF` with Q kept on the device."""

    def __init__(self, u, kernels):
        _require_gpu()
        self.u = cuda.to_device(u)  # (N, L)
        self.shape = u.shape
        self.kernels = []
        for kernel in kernels:
            dev = kernel.lattice.on_device()
            pre = None if kernel.pre is None else cuda.to_device(kernel.pre)
            post = None if kernel.post is None else cuda.to_device(kernel.post)
            mu = cuda.to_device(np.ascontiguousarray(kernel.mu.reshape(-1, kernel.mu.shape[-1])))
            self.kernels.append((kernel, dev, pre, post, mu))
        self._qf = cuda.device_array(self.shape, np.float32)
        self._energy = cuda.device_array(self.shape, np.float32)

    def to_host(self, q):
        return q.copy_to_host() if _on_device(q) else q

    def start(self):
        q = cuda.device_array(self.shape, np.float32)
        _softmax_kernel[_grid(self.shape[0])](self.u, np.float32(-1.0), q)
        return q

    def _as_device(self, q):
        return q if _on_device(q) else cuda.to_device(np.ascontiguousarray(q, dtype=np.float32))

    def messages(self, q):
        q = self._as_device(q)
        out = []
        for _, dev, pre, post, _ in self.kernels:
            qf = cuda.device_array(self.shape, np.float32)
            dev.filter(q, qf, pre, post)
            out.append(qf.copy_to_host())
        return out

    def step(self, q):
        q = self._as_device(q)
        if not self.kernels:
            return self.start()
        grid = _grid(self.shape[0] * self.shape[1])
        for i, (kernel, dev, pre, post, mu) in enumerate(self.kernels):
            dev.filter(q, self._qf, pre, post)
            _message_kernel[grid](self._qf, np.float32(kernel.w), kernel.kind, mu,
                                  self.u if i == 0 else self._energy, np.float32(-1.0 if i == 0 else 1.0),
                                  self._energy)
        out = cuda.device_array(self.shape, np.float32)
        _softmax_kernel[_grid(self.shape[0])](self._energy, np.float32(1.0), out)
        return out
