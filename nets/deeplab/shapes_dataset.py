"""A procedurally generated segmentation data set for the embedded demo model.

Each sample is a small photo-like RGB image of a few flat shapes and its label map.
Everything comes from NumPy's PCG64 generator seeded by ``(split, index)``, so a
sample is a pure function of its split and index: no files, no downloads.

The generator
-------------
1. **Background** (:func:`_background`): a base colour, plus a smooth random field
   (Gaussian-filtered white noise, sigma about a fifth of the image, along a random
   colour direction), plus a linear gradient in a random direction and colour, plus a
   fine texture (either filtered noise at sigma about one pixel or oblique stripes of
   period 3 to 8 pixels), per-channel weak low-frequency tints on top.
2. **Objects** (:func:`_signed_distance`): two to five shapes drawn from
   :data:`CLASSES` (disk, square, triangle, ring, bar), with a random centre (up to
   a tenth of the image outside the border is cut off), size, and rotation. They are
   painted in order, so later shapes occlude earlier ones. Each shape is a signed
   distance ``d`` (negative inside); its label covers ``d < 0`` and its paint covers
   ``sigmoid(-d / softness)`` with a softness of 0.3 to 1.5 pixels, so edges are soft.
3. **Appearance**: an object's colour is the background's smooth colour under its
   centre plus a random colour offset of length 25 to 40 (a third of the objects:
   low contrast) or 40 to 90 (the others), with its own shading gradient and the
   same fine texture as the background. Objects are therefore told apart by their
   form, not by their colour, and some edges are faint: a stride-8 network places
   boundaries coarsely, and the bilateral term of a dense CRF, which looks at colour
   differences, has something to sharpen.
4. **Camera**: a Gaussian blur of sigma 0.3 to 0.8 pixels, then white noise of
   standard deviation 1.5 to 4 grey levels, then rounding to uint8.

The split
---------
``sample(index, split)`` seeds ``numpy.random.default_rng([SPLIT_KEYS[split], index])``:
the training split uses key 0 and the held-out split key 1, so the two are different
random streams for every index (disjoint by construction: no held-out image is a
training image). The demo models use training indices 0..3999 to learn, 1000000..1000099
to stop early and 2000000..2000039 to tune their CRF preset (``tools/train_demo.py``,
``tools/tune_demo_crf.py``); reported scores use held-out indices 0..99, of which 0..7
ship as PNGs in ``nets/data/demo/heldout``.

Sizes follow DeepLab's alignment rule ``size = 8k + 1`` (97 = 8 * 12 + 1): three
stride-2 ceil-mode poolings give ``k + 1`` score rows and columns, and an Interp zoom of
8 maps score pixel ``i`` exactly onto image pixel ``8 i``.
"""
import numpy as np

#: Class names, index = label; 0 is the background.
CLASSES = ("background", "disk", "square", "triangle", "ring", "bar")

#: Seed key of each split: the first word of the generator's seed.
SPLIT_KEYS = {"train": 0, "heldout": 1}

#: The default image size (8 * 12 + 1).
DEFAULT_SIZE = 97

# Radius range of each class as a fraction of the image size; rings are kept larger
# so that their hole stays visible.
_RADIUS = {1: (0.10, 0.22), 2: (0.10, 0.21), 3: (0.13, 0.25), 4: (0.15, 0.25), 5: (0.12, 0.24)}
_RING_INNER = 0.55      # inner radius of a ring / outer radius
_BAR_HALF_WIDTH = 0.28  # half width of a bar / its half length


def _unit_field(rng, size, sigma):
    """Gaussian-filtered white noise scaled to unit standard deviation, ``(size, size)``."""
    from scipy import ndimage  # here, not at the top: the class names above are read by every segment run
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _colour_direction(rng):
    """A random unit vector in RGB, ``(3,)``."""
    v = rng.standard_normal(3)
    return v / (np.linalg.norm(v) + 1e-12)


def _fine_texture(rng, size, rows, cols):
    """Fine texture of unit amplitude, ``(size, size)``: filtered noise or stripes."""
    if rng.random() < 0.5:
        return _unit_field(rng, size, rng.uniform(0.7, 1.3))
    period = rng.uniform(3.0, 8.0)
    angle = rng.uniform(0.0, np.pi)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    return np.sin(2.0 * np.pi * (rows * np.cos(angle) + cols * np.sin(angle)) / period + phase)


def _background(rng, size, rows, cols):
    """The background: ``(image (size, size, 3) float64, smooth colour (size, size, 3))``.

    The smooth colour (base + smooth field + gradient) is what object colours are
    chosen against; the image adds the fine texture.
    """
    base = rng.uniform(50.0, 205.0, 3)
    smooth = base + rng.uniform(12.0, 35.0) * _unit_field(rng, size, size / 5.0)[..., None] \
        * _colour_direction(rng)
    for c in range(3):  # weak independent tints keep the colours from lying on one line
        smooth[..., c] += rng.uniform(0.0, 10.0) * _unit_field(rng, size, size / 4.0)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = ((rows - size / 2) * np.cos(angle) + (cols - size / 2) * np.sin(angle)) / size  # in [-0.7, 0.7]
    smooth = smooth + rng.uniform(0.0, 50.0) * ramp[..., None] * _colour_direction(rng)
    texture = rng.uniform(3.0, 10.0) * _fine_texture(rng, size, rows, cols)
    return smooth + texture[..., None] * _colour_direction(rng), smooth


def _signed_distance(label, rows, cols, centre, radius, angle):
    """Signed distance (negative inside) to a shape of class ``label``, ``(size, size)``.

    Squares, triangles and bars use the maximum of their half-plane distances: exact
    inside and along the edges, slightly short near outside corners, which only
    changes how the soft edge fades there.
    """
    dy, dx = rows - centre[0], cols - centre[1]
    # coordinates in the shape's own rotated frame
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rho = np.hypot(dx, dy)
    if label == 1:  # disk
        return rho - radius
    if label == 2:  # square of half side 0.85 * radius
        return np.maximum(np.abs(u), np.abs(v)) - 0.85 * radius
    if label == 3:  # equilateral triangle of circumradius `radius` (inradius radius / 2)
        normals = [(np.cos(a), np.sin(a)) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3,
                                                    np.pi / 2 + 4 * np.pi / 3)]
        return np.max([u * nx + v * ny for nx, ny in normals], axis=0) - radius / 2
    if label == 4:  # ring
        return np.maximum(rho - radius, _RING_INNER * radius - rho)
    if label == 5:  # bar of half length 1.1 * radius
        return np.maximum(np.abs(u) - 1.1 * radius, np.abs(v) - _BAR_HALF_WIDTH * 1.1 * radius)
    raise ValueError(f"label must be a shape class in 1..{len(CLASSES) - 1}; got {label}")


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an int; got {type(size).__name__}")
    if size < 17 or size % 8 != 1:
        raise ValueError(f"size must be 8k + 1 and at least 17 (DeepLab's alignment rule); got {size}")


def sample(index, split="train", size=DEFAULT_SIZE):
    """One sample of the data set.

    Parameters
    ----------
    index : int
        Sample number, >= 0.
    split : {"train", "heldout"}
        Which split; the two never share a random stream.
    size : int
        Image side, ``8k + 1`` (default 97).

    Returns
    -------
    image : ndarray of shape (size, size, 3), uint8
        RGB.
    labels : ndarray of shape (size, size), uint8
        Class indices into :data:`CLASSES` (0 = background).

    Raises
    ------
    ValueError
        An unknown split, a negative index, or a size that is not ``8k + 1``.
    """
    if split not in SPLIT_KEYS:
        raise ValueError(f"split must be one of {sorted(SPLIT_KEYS)}; got {split!r}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int; got {index!r}")
    _check_size(size)
    rng = np.random.default_rng([SPLIT_KEYS[split], int(index)])
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    image, smooth = _background(rng, size, rows, cols)
    labels = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(2, 6)):
        label = int(rng.integers(1, len(CLASSES)))
        radius = rng.uniform(*_RADIUS[label]) * size
        centre = rng.uniform(0.1 * size, 0.9 * size, 2)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        d = _signed_distance(label, rows, cols, centre, radius, angle)
        alpha = 1.0 / (1.0 + np.exp(np.clip(d / rng.uniform(0.3, 1.5), -50.0, 50.0)))
        contrast = rng.uniform(25.0, 40.0) if rng.random() < 1 / 3 else rng.uniform(40.0, 90.0)
        cy, cx = np.clip(np.round(centre).astype(int), 0, size - 1)
        colour = smooth[cy, cx] + contrast * _colour_direction(rng)
        shade_angle = rng.uniform(0.0, 2.0 * np.pi)
        shade = ((rows - centre[0]) * np.cos(shade_angle) + (cols - centre[1]) * np.sin(shade_angle)) / radius
        paint = (colour + rng.uniform(0.0, 12.0) * shade[..., None] * _colour_direction(rng)
                 + rng.uniform(2.0, 8.0) * _fine_texture(rng, size, rows, cols)[..., None]
                 * _colour_direction(rng))
        image = image * (1.0 - alpha[..., None]) + paint * alpha[..., None]
        labels[d < 0] = label
    from scipy import ndimage
    image = ndimage.gaussian_filter(image, (rng.uniform(0.3, 0.8),) * 2 + (0,), mode="nearest")
    image = image + rng.uniform(1.5, 4.0) * rng.standard_normal(image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


def dataset(indices, split="train", size=DEFAULT_SIZE):
    """Several samples stacked: ``(images (N, size, size, 3) uint8, labels (N, size, size) uint8)``."""
    indices = list(indices)
    images = np.empty((len(indices), size, size, 3), np.uint8)
    labels = np.empty((len(indices), size, size), np.uint8)
    for n, index in enumerate(indices):
        images[n], labels[n] = sample(index, split, size)
    return images, labels
