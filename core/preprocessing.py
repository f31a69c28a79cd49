"""From any picture of one handwritten character to the model's input: a 28x28 NIST-like glyph.

The one preprocessing function, shared by the API and the trainer. Only numpy and Pillow:
the API never imports TensorFlow.

The output looks like an EMNIST image (measured on the data, see the constants): white ink on
black, the strokes' bounding box scaled to 22 px on its longer side, keeping the aspect ratio,
centred by that box, with soft antialiased edges and values in [0, 1]. It is upright (the
EMNIST files store images transposed; trainer.data turns them upright when reading).

Steps:
 1. grayscale at a bounded working size (alpha composited, 16-bit and palette images handled);
 2. polarity from the image: the background is the border's median, the ink is whichever
    extreme lies farther from it, and the ink is made bright;
 3. an estimated smooth background (uneven paper, shadows) is subtracted and the contrast
    stretched between the noise floor and the ink's level;
 4. the ink's bounding box, ignoring specks and faint noise;
 5. strokes too thin for 28x28 are thickened up to EMNIST's thinnest (never beyond);
 6. one antialiased resampling puts the box at the centre of the 28x28 output.
"""

from collections.abc import Iterable

import numpy as np
from PIL import Image

MODEL_INPUT_NAME = "image"
MODEL_INPUT_SIDE = 28
MODEL_INPUT_SHAPE = (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE, 1)  # per image; batches are (N, ...)

# Measured on the EMNIST images: at half intensity a glyph spans 22 px on its longer side
# (median; 24-26 px counting the faint edge), and glyphs are centred by their bounding box
# (box centre 13.5 +- 0.2 px, centre of mass 13.5 +- 1.3 px). MNIST's 20 px box and
# centre-of-mass centring would not match the data the model learns from.
GLYPH_BOX = 22
# EMNIST strokes are 2.3-4.9 px wide (5th-95th percentile): thinner strokes are thickened to this.
MIN_STROKE_WIDTH = 2.0

# Big images are reduced to this longer side first: a glyph needs far fewer pixels than a
# 12-megapixel photo has, and every later step is then cheap.
WORKING_SIDE = 512
# Glyphs larger than this many times the output are reduced to it before strokes are measured.
SUPERSAMPLE = 4

_INK_THRESHOLD = 0.5  # of the normalised ink level: what counts as a stroke for the box
_MIN_INK_PIXELS = 4  # fewer stroke pixels than this: the image is empty
_MIN_CONTRAST = 0.06  # ink less than this far above the background is no ink at all
_TRIM_MASS = 0.005  # the box ignores up to this share of stroke pixels at each side


def preprocess_image(image: Image.Image) -> np.ndarray:
    """Any PIL image of one character -> float32 (28, 28) in [0, 1], ink bright, upright.

    An image without ink gives all zeros.
    """
    gray = _grayscale(image)
    ink, on_paper = _bright_ink(gray)
    ink = _normalise_contrast(ink, on_paper)
    box = _ink_box(ink)
    if box is None:
        return np.zeros((MODEL_INPUT_SIDE, MODEL_INPUT_SIDE), dtype=np.float32)
    top, bottom, left, right = box
    centre = ((top + bottom) / 2, (left + right) / 2)
    scale = GLYPH_BOX / max(bottom - top, right - left)  # input px -> output px

    # Only what is in (and just around) the box goes on: specks elsewhere are dropped.
    margin = 2 + 0.05 * max(bottom - top, right - left)
    ink = _keep_window(ink, top - margin, bottom + margin, left - margin, right + margin)

    if scale < 1 / SUPERSAMPLE:  # a big glyph: bring it to SUPERSAMPLE x the output first
        side = int(np.ceil(SUPERSAMPLE * MODEL_INPUT_SIDE))
        ink = _resample(ink, centre, SUPERSAMPLE * scale, side)
        ink = _stretch(ink)
        centre, scale = (side / 2, side / 2), 1 / SUPERSAMPLE
    ink = _thicken_thin_strokes(ink, MIN_STROKE_WIDTH / scale)

    glyph = _resample(ink, centre, scale, MODEL_INPUT_SIDE)
    peak = float(glyph.max())
    if peak <= 0:
        return np.zeros((MODEL_INPUT_SIDE, MODEL_INPUT_SIDE), dtype=np.float32)
    return np.clip(glyph / peak, 0.0, 1.0).astype(np.float32)  # EMNIST glyphs peak at 1


def preprocess_batch(images: Iterable[Image.Image]) -> np.ndarray:
    """Several PIL images -> float32 (N, 28, 28, 1), the model's input."""
    glyphs = [preprocess_image(image) for image in images]
    if not glyphs:
        return np.zeros((0, *MODEL_INPUT_SHAPE), dtype=np.float32)
    return np.stack(glyphs)[..., np.newaxis]


def nist_to_model_input(images: np.ndarray) -> np.ndarray:
    """EMNIST images (N, 28, 28) uint8, upright, are already glyphs: only scale to [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., np.newaxis]


def _percentile(values: np.ndarray, q: float) -> np.ndarray:
    """np.percentile(values, q) along the last axis (all of a 1-D or flattened 2-D array),
    linear interpolation; a partition instead of numpy's general machinery, which costs more
    than the work on images this small."""
    if values.ndim == 2:
        values = values.ravel()
    count = values.shape[-1]
    position = q / 100 * (count - 1)
    lower = int(position)
    upper = min(lower + 1, count - 1)
    parted = np.partition(values, (lower, upper), axis=-1)
    below, above = parted[..., lower], parted[..., upper]
    return below + (above - below) * (position - lower)


# --- 1. Grayscale ---------------------------------------------------------------------------


def _grayscale(image: Image.Image) -> np.ndarray:
    """float32 (H, W) in [0, 1], no side longer than WORKING_SIDE; alpha composited."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return np.asarray(_reduce(_high_depth_to_float(image)), dtype=np.float32)
    if image.mode == "LAB":
        image = image.getchannel("L")
    elif image.mode in ("CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB")
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")  # palette and tRNS transparency become an alpha channel

    has_alpha = image.mode in ("RGBA", "RGBa", "LA", "La", "PA")
    if has_alpha and image.getchannel("A").getextrema()[0] == 255:
        has_alpha = False  # an opaque alpha channel: nothing to composite
    if not has_alpha:
        gray = _reduce(image.convert("L"))
        return np.asarray(gray, dtype=np.float32) / 255.0

    # Pillow resizes LA with premultiplied alpha, so the edges of strokes stay right.
    reduced = _reduce(image.convert("LA"))
    luminance = np.asarray(reduced.getchannel("L"), dtype=np.float32) / 255.0
    alpha = np.asarray(reduced.getchannel("A"), dtype=np.float32) / 255.0
    # On a transparent canvas the opaque part is the ink: put it on a background it contrasts
    # with (dark strokes on white, light strokes on black).
    opaque_luminance = float((alpha * luminance).sum() / max(alpha.sum(), 1e-6))
    background = 1.0 if opaque_luminance < 0.5 else 0.0
    return alpha * luminance + (1.0 - alpha) * background


def _high_depth_to_float(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float images as an "F" image in [0, 1]."""
    values = np.asarray(image, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    full_scale = 1.0 if top <= 1.0 and image.mode == "F" else 255.0 if top <= 255 else 65535.0
    full_scale = max(full_scale, top)
    return Image.fromarray(np.clip(values / full_scale, 0.0, 1.0).astype(np.float32))


def _reduce(image: Image.Image) -> Image.Image:
    longer = max(image.size)
    if longer <= WORKING_SIDE:
        return image
    factor = WORKING_SIDE / longer
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    # BOX averages every source pixel (no aliasing); reducing_gap makes huge images fast.
    return image.resize(size, Image.Resampling.BOX, reducing_gap=3.0)


# --- 2. Polarity ----------------------------------------------------------------------------


def _bright_ink(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Bright ink on a dark background, and whether the picture was dark ink on light."""
    frame = max(1, round(0.03 * min(gray.shape)))
    border = np.concatenate([gray[:frame], gray[-frame:], gray[:, :frame].T, gray[:, -frame:].T], 1)
    background = float(_percentile(border, 50))
    darkest, brightest = float(_percentile(gray, 0.1)), float(_percentile(gray, 99.9))
    # The ink is the extreme farther from the background: dark pen on grey paper or chalk on
    # a blackboard alike.
    if background - darkest > brightest - background:
        return 1.0 - gray, True
    return gray, False


# --- 3. Background and contrast -------------------------------------------------------------


def _normalise_contrast(ink: np.ndarray, on_paper: bool) -> np.ndarray:
    """Remove the smooth background, stretch ink to [0, 1]; no ink at all gives zeros."""
    background = _background(ink)
    if on_paper:
        # Ink on paper absorbs a share of the light that falls on it: divide by the local
        # paper brightness (1 - background), so strokes in the shadow are as dark as the rest.
        residual = (ink - background) / np.maximum(1.0 - background, 0.05)
    else:
        residual = ink - background
    residual = np.clip(residual, 0.0, None)
    median = float(_percentile(residual, 50))
    spread = 1.4826 * float(_percentile(np.abs(residual - median), 50))  # noise sigma, robustly
    floor = median + 5.0 * spread
    strong = residual[residual > floor]
    if strong.size < _MIN_INK_PIXELS:
        return np.zeros_like(residual)
    level = float(_percentile(strong, 90))  # the level of the strokes' cores
    if level - floor < _MIN_CONTRAST:
        return np.zeros_like(residual)
    return np.clip((residual - floor) / (level - floor), 0.0, 1.0)


def _background(ink: np.ndarray) -> np.ndarray:
    """A smooth estimate of the background under the (bright) ink: uneven light, grey paper.

    Per block a low percentile, then a morphological opening of the block grid (min, then
    max, over 3x3 blocks) so that blocks inside thick strokes take their neighbours' level
    while a gradient is kept, then bilinear interpolation back to full size.
    """
    height, width = ink.shape
    block = max(4, max(height, width) // 16)
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(ink, ((0, rows * block - height), (0, cols * block - width)), mode="edge")
    blocks = padded.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    grid = _percentile(blocks, 20).astype(np.float32)
    grid = _filter3x3(_filter3x3(grid, np.minimum), np.maximum)
    smooth = Image.fromarray(grid).resize((cols * block, rows * block), Image.Resampling.BILINEAR)
    return np.asarray(smooth, dtype=np.float32)[:height, :width]


def _filter3x3(grid: np.ndarray, combine: np.ufunc) -> np.ndarray:
    """Each cell combined (np.minimum, np.maximum, np.add) with its 3x3 neighbourhood; beyond
    the border the edge repeats."""
    return _window_filter(grid, 1, combine, edge=True)


def _window_filter(image: np.ndarray, radius: int, combine: np.ufunc, edge: bool) -> np.ndarray:
    """A square (2 radius + 1) window filter: min, max and sum are separable, so one axis at a
    time, with shifted slices (no padding, no sliding-window reduction: both cost more than
    the work on images this small). Beyond the border the edge repeats (`edge`) or nothing
    counts, which is zero padding for a max over non-negative values and for a sum."""
    result = image.copy()
    for axis in (0, 1):
        source = result.copy() if axis else image
        out = result if axis == 0 else result.T
        source = source if axis == 0 else source.T
        for k in range(1, radius + 1):
            combine(out[k:], source[:-k], out=out[k:])
            combine(out[:-k], source[k:], out=out[:-k])
            if edge:
                combine(out[:k], source[:1], out=out[:k])
                combine(out[-k:], source[-1:], out=out[-k:])
    return result


def _stretch(ink: np.ndarray) -> np.ndarray:
    """After averaging a big glyph down, thin strokes are faint: bring their cores to 1."""
    visible = ink[ink > 0.05]
    if visible.size == 0:
        return ink
    return np.clip(ink / max(float(_percentile(visible, 90)), 1e-6), 0.0, 1.0)


# --- 4. The ink's box -----------------------------------------------------------------------


def _ink_box(ink: np.ndarray) -> tuple[float, float, float, float] | None:
    """(top, bottom, left, right) edges of the strokes, in pixel units; None if no ink."""
    strokes = ink > _INK_THRESHOLD
    # A stroke pixel with fewer than two stroke neighbours is a speck.
    neighbours = _filter3x3(strokes.astype(np.uint8), np.add) - strokes
    strokes &= neighbours >= 2
    if strokes.sum() < _MIN_INK_PIXELS:
        return None
    top, bottom = _trimmed_extent(strokes.sum(axis=1))
    left, right = _trimmed_extent(strokes.sum(axis=0))
    return float(top), float(bottom + 1), float(left), float(right + 1)


def _trimmed_extent(profile: np.ndarray) -> tuple[int, int]:
    """First and last index of a profile, ignoring a tiny share of its mass at either end."""
    cumulative = np.cumsum(profile) / profile.sum()
    first = int(np.searchsorted(cumulative, _TRIM_MASS, side="right"))
    last = int(np.searchsorted(cumulative, 1 - _TRIM_MASS, side="left"))
    return first, max(first, min(last, len(profile) - 1))


def _keep_window(ink: np.ndarray, top: float, bottom: float, left: float, right: float):
    kept = np.zeros_like(ink)
    rows = slice(max(0, int(np.floor(top))), max(0, int(np.ceil(bottom))))
    cols = slice(max(0, int(np.floor(left))), max(0, int(np.ceil(right))))
    kept[rows, cols] = ink[rows, cols]
    return kept


# --- 5. Stroke width ------------------------------------------------------------------------


def _thicken_thin_strokes(ink: np.ndarray, min_width: float) -> np.ndarray:
    """Grow strokes thinner than `min_width` px to about that width; others stay as they are."""
    strokes = ink > _INK_THRESHOLD
    area = int(strokes.sum())
    if area == 0:
        return ink
    interior = (
        strokes[1:-1, 1:-1]
        & strokes[:-2, 1:-1]
        & strokes[2:, 1:-1]
        & strokes[1:-1, :-2]
        & strokes[1:-1, 2:]
    )
    edge_pixels = area - int(interior.sum())
    width = 2.0 * area / max(edge_pixels, 1)  # a stroke of width w, length L: area wL, edge 2L
    radius = round((min_width - width) / 2)
    if radius < 1:
        return ink
    return _max_filter(ink, radius)


def _max_filter(ink: np.ndarray, radius: int) -> np.ndarray:
    return _window_filter(ink, radius, np.maximum, edge=False)  # ink >= 0


# --- 6. Resampling --------------------------------------------------------------------------


def _resample(ink: np.ndarray, centre: tuple[float, float], scale: float, side: int) -> np.ndarray:
    """The side x side image centred on `centre` of `ink`, magnified by `scale`, antialiased."""
    half = side / 2 / scale
    cy, cx = centre
    pad = int(np.ceil(half)) + 2
    top, left = int(np.floor(cy - half)) - 1, int(np.floor(cx - half)) - 1
    # The needed window, zero-filled where it leaves the image (Pillow's box must lie inside).
    window = np.zeros((2 * pad + 2, 2 * pad + 2), dtype=np.float32)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom = min(top + window.shape[0], ink.shape[0])
    src_right = min(left + window.shape[1], ink.shape[1])
    if src_bottom > src_top and src_right > src_left:
        window[src_top - top : src_bottom - top, src_left - left : src_right - left] = ink[
            src_top:src_bottom, src_left:src_right
        ]
    box = (cx - half - left, cy - half - top, cx + half - left, cy + half - top)
    # BILINEAR in Pillow widens its kernel when shrinking: soft edges, no aliasing, no ringing.
    resized = Image.fromarray(window).resize((side, side), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.float32)
