"""Reading images and writing results: the rules every command shares.

Reading (:func:`read_image`)
    Any file pillow opens. The EXIF orientation tag is applied first, so a phone
    photo is segmented the way it is shown. Modes become RGB by one rule:

    ========================  ==========================================================
    mode                      becomes
    ========================  ==========================================================
    RGB                       itself
    L, 1                      gray replicated to three channels
    LA, RGBA, PA, P with      composited onto white (a transparent pixel reads as
    transparency              white, never as the black its colour bytes may hold)
    P (no transparency)       its palette colours
    I;16, I, F                scaled linearly from [min, max] to [0, 255], then gray
    CMYK, YCbCr, LAB, HSV     pillow's conversion to RGB
    ========================  ==========================================================

Writing
    Label maps are written as indexed ("P" mode) PNGs with the PASCAL VOC palette,
    so that the file holds the class indices themselves (read it back with
    :func:`read_label_png`, never as RGB). Every output goes through
    :func:`nets.caffe.atomic_write`: a temporary file in the same folder, renamed over the
    target only when it is complete, so an interrupted run never leaves half a file.
"""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from nets.caffe import atomic_write

#: The ground-truth value of pixels that are not counted ("void", PASCAL VOC's 255).
VOID_LABEL = 255


def voc_palette():
    """The PASCAL VOC colour map: 256 RGB colours, ``ndarray (256, 3) uint8``.

    Colour ``i`` spreads the bits of ``i`` over the three channels, most
    significant first: bit 3k+c of the label sets bit 7-k of channel c.
    Label 255 (void) comes out as (224, 224, 192).
    """
    palette = np.zeros((256, 3), np.uint8)
    for label in range(256):
        value, r, g, b = label, 0, 0, 0
        for k in range(8):
            r |= ((value >> 0) & 1) << (7 - k)
            g |= ((value >> 1) & 1) << (7 - k)
            b |= ((value >> 2) & 1) << (7 - k)
            value >>= 3
        palette[label] = (r, g, b)
    return palette


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file."""


def _to_rgb(img):
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = np.zeros_like(a) if hi == lo else (a - lo) * (255.0 / (hi - lo))
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def read_image(path):
    """Read an image file as RGB.

    Parameters
    ----------
    path : str or os.PathLike
        Any format pillow reads.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
        RGB, rows first, EXIF orientation applied, converted by the rule in the
        module docstring.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable or not an image; the message names it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
            return np.array(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{os.fspath(path)}: no such file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{os.fspath(path)}: not a readable image ({exc})") from None


def read_label_png(path):
    """Read a label map stored as an indexed PNG: ``ndarray (H, W) uint8`` of class indices.

    An indexed ("P") PNG gives its indices; a gray ("L") PNG its values. An RGB
    label image is refused: reading colours instead of indices is a classic
    cause of nonsense scores, and guessing the palette back would hide it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise ImageReadError(
                    f"{os.fspath(path)}: a label map must be an indexed (P) or gray (L) PNG "
                    f"holding class indices, got mode {img.mode!r}")
            return np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{os.fspath(path)}: no such file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{os.fspath(path)}: not a readable image ({exc})") from None


def save_image_atomic(img, path, **save_kwargs):
    """Save a ``PIL.Image`` atomically; the format follows the file extension."""
    fmt = Image.registered_extensions().get(os.path.splitext(os.fspath(path))[1].lower())
    if fmt is None:
        raise ValueError(f"{os.fspath(path)}: unknown image extension")
    with atomic_write(path) as f:
        img.save(f, format=fmt, **save_kwargs)


def write_label_png(path, labels):
    """Write a label map as an indexed PNG with the PASCAL VOC palette.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, written atomically.
    labels : ndarray of shape (H, W), integer
        Class indices in [0, 255] (255 = void).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must lie in [0, 255], got [{labels.min()}, {labels.max()}]")
    img = Image.fromarray(labels.astype(np.uint8), "P")
    img.putpalette(voc_palette().ravel().tolist())
    save_image_atomic(img, path)


def colorize(labels):
    """Label map ``(H, W)`` -> RGB picture ``(H, W, 3) uint8`` with the VOC palette."""
    return voc_palette()[np.asarray(labels, dtype=np.uint8)]


def overlay(image, labels, alpha=0.5, legend=False, classes=None):
    """Blend the coloured labels over an RGB image; background (label 0) stays the image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    labels : ndarray of shape (H, W), integer
    alpha : float
        Weight of the label colour in a labelled pixel.
    legend : bool
        Add a white strip below the picture that names every label it colours beside a
        swatch of its colour (:func:`legend_strip`). Rows ``[:H]`` and columns ``[:W]``
        stay the blended picture, pixel for pixel; the strip may widen the canvas
        (white on the right) when the image is narrower than one name.
    classes : sequence of str, optional
        Class names by label, for the legend (else labels are named by number).

    Returns
    -------
    ndarray of shape (H, W, 3), or (H + strip, max(W, strip width), 3) with ``legend``, uint8
    """
    image = np.asarray(image, dtype=np.float32)
    colors = colorize(labels).astype(np.float32)
    mask = (np.asarray(labels) != 0)[:, :, None]
    blended = np.where(mask, (1 - alpha) * image + alpha * colors, image)
    picture = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if not legend:
        return picture
    strip = legend_strip(legend_entries(labels, classes), picture.shape[1])
    height, width = picture.shape[:2]
    canvas = np.full((height + strip.shape[0], max(width, strip.shape[1]), 3), 255, np.uint8)
    canvas[:height, :width] = picture
    canvas[height:, :strip.shape[1]] = strip
    return canvas


def legend_entries(labels, classes=None):
    """The labels an overlay colours, with their names: ``[(label, name), ...]``, by label.

    Background (0) is left out, as :func:`overlay` leaves it uncoloured. A label beyond
    ``classes``, or any label without ``classes``, is named by its number.
    """
    present = np.unique(np.asarray(labels))
    return [(int(k), str(classes[k]) if classes is not None and k < len(classes) else f"label {k}")
            for k in present if k != 0]


_SWATCH = 12  # side of a colour swatch, pixels
_GAP = 4  # pixels around and between the entries


def legend_strip(entries, width):
    """Entries ``(label, name)`` as a white strip: a swatch in the label's VOC colour, then its name.

    The entries run left to right in rows of at most ``width`` pixels (one entry a row when
    one is wider than that). With no entries the strip says ``background only``. Each swatch
    is ``_SWATCH`` pixels square, its colour framed by a one-pixel grey border so that light
    colours show on the white.

    Returns
    -------
    ndarray of shape (h, max(width, widest entry), 3), uint8
    """
    font = ImageFont.load_default()
    palette = voc_palette()
    items = [(label, name, _SWATCH + _GAP + int(np.ceil(font.getlength(name)))) for label, name in entries] \
        or [(None, "background only", int(np.ceil(font.getlength("background only"))))]
    top, bottom = font.getbbox("Ag")[1::2]
    row = max(_SWATCH, bottom) + _GAP
    width = max(width, max(w for _, _, w in items) + 2 * _GAP)
    places, x, y = [], _GAP, _GAP
    for item in items:
        if x > _GAP and x + item[2] + _GAP > width:  # the next row
            x, y = _GAP, y + row
        places.append((x, y, item))
        x += item[2] + 2 * _GAP
    img = Image.new("RGB", (width, y + row + _GAP), "white")
    draw = ImageDraw.Draw(img)
    for x, y, (label, name, _) in places:
        if label is None:
            draw.text((x, y), name, fill="black", font=font)
            continue
        draw.rectangle((x, y, x + _SWATCH - 1, y + _SWATCH - 1), fill=tuple(int(c) for c in palette[label]),
                       outline=(128, 128, 128))
        draw.text((x + _SWATCH + _GAP, y + (_SWATCH - bottom - top) // 2), name, fill="black", font=font)
    return np.asarray(img)
