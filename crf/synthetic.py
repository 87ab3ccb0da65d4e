"""Seeded, photo-like test inputs for the CRF's tests, self-check and benchmarks.

No photograph ships with the package, so :func:`photo` paints one: a smooth
sky-like gradient, a textured ground, a few objects (discs and rectangles)
with soft, anti-aliased edges and their own shading, and mild sensor noise.
It has what the CRF cares about: large smooth regions, strong and weak edges,
fine texture and noise, which make the bilateral lattice large (about 1.4
vertices per pixel at theta_alpha 67, theta_beta 3). It is still easier than
a natural photograph: pydensecrf2 filters it faster than a real 500x375 photo.
:func:`smooth_logits` draws seeded logits at 1/8 resolution and upsamples
them bilinearly, like a network's coarse output.
"""
import numpy as np


def _bilinear_upsample(x, height, width):
    """(C, h, w) -> (C, height, width), align-corners bilinear."""
    _, h, w = x.shape
    ys = np.linspace(0, h - 1, height)
    xs = np.linspace(0, w - 1, width)
    y0 = np.minimum(ys.astype(int), h - 2) if h > 1 else np.zeros(height, int)
    x0 = np.minimum(xs.astype(int), w - 2) if w > 1 else np.zeros(width, int)
    ly = (ys - y0)[:, None] if h > 1 else np.zeros((height, 1))
    lx = (xs - x0)[None, :] if w > 1 else np.zeros((1, width))
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    top = x[:, y0][:, :, x0] * (1 - lx) + x[:, y0][:, :, x1] * lx
    bottom = x[:, y1][:, :, x0] * (1 - lx) + x[:, y1][:, :, x1] * lx
    return top * (1 - ly) + bottom * ly


def photo(height=120, width=160, seed=0):
    """A photo-like RGB image, (H, W, 3) uint8, the same for the same arguments."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width].astype(np.float64)
    v, u = y / max(height - 1, 1), x / max(width - 1, 1)
    sky = np.stack([90 + 80 * v, 140 + 60 * v, 230 - 40 * v], axis=-1)
    texture = _bilinear_upsample(rng.normal(0, 1, (3, max(2, height // 6), max(2, width // 6))),
                                 height, width).transpose(1, 2, 0)
    ground = np.stack([110 + 30 * u, 90 + 20 * u, 50 + 10 * v], axis=-1) + 18 * texture
    horizon = 0.55 + 0.05 * np.sin(6 * u + rng.uniform(0, 6))
    mask = 1 / (1 + np.exp(-(v - horizon) * height / 3))  # soft horizon
    img = sky * (1 - mask[..., None]) + ground * mask[..., None]
    for _ in range(4):
        cy, cx = rng.uniform(0.3, 0.85) * height, rng.uniform(0.1, 0.9) * width
        r = rng.uniform(0.08, 0.2) * min(height, width)
        colour = rng.uniform(20, 235, 3)
        if rng.random() < 0.5:
            dist = np.hypot(y - cy, x - cx) - r
        else:
            dist = np.maximum(np.abs(y - cy) - r, np.abs(x - cx) - 0.7 * r)
        alpha = 1 / (1 + np.exp(dist / 1.2))  # anti-aliased edge about two pixels wide
        shade = (1 - 0.25 * (y - cy) / (r + 1)) [..., None]
        img = img * (1 - alpha[..., None]) + np.clip(colour * shade, 0, 255) * alpha[..., None]
    # fine texture (foliage, fabric) everywhere below the horizon, sensor noise everywhere:
    # natural photographs are far from piecewise constant at the CRF's colour scale (3 levels)
    fine = _bilinear_upsample(rng.normal(0, 1, (3, max(2, height // 2), max(2, width // 2))),
                              height, width).transpose(1, 2, 0)
    img += 12 * fine * mask[..., None] + rng.normal(0, 4, img.shape)
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def smooth_logits(n_labels, height, width, seed=0, stride=8, scale=3.0):
    """Seeded logits drawn at 1/stride resolution and upsampled, (L, H, W) float32."""
    rng = np.random.default_rng(seed)
    h, w = max(2, -(-height // stride)), max(2, -(-width // stride))
    coarse = rng.normal(0, scale, (n_labels, h, w))
    return _bilinear_upsample(coarse, height, width).astype(np.float32)
