"""From any picture of one handwritten character to the model's input: a 28x28 NIST-like glyph.

The one preprocessing function, shared by the API, the worker and the trainer. Compiled image
operations (OpenCV) on numpy arrays; the API never imports TensorFlow.

The output looks like an EMNIST image (measured on the data, see the constants): white ink on
black, the strokes' bounding box scaled to 22 px on its longer side, keeping the aspect ratio,
centred by that box, with soft antialiased edges and values in [0, 1]. It is upright (the
EMNIST files store images transposed; trainer.data turns them upright when reading).

Every step is decided by measurements of the picture, not by one fixed recipe:
 1. grayscale, alpha composited, reduced to at most WORKING_SIDE (INTER_AREA);
 2. on a thumbnail (at most THUMB_SIDE): the paper (its level at the border, whether it is
    even, which way the ink goes), the ruled or squared lines printed on it, the noise floor,
    and a first box around the ink;
 3. the window around that box, at a resolution just fine enough for the glyph (its box at
    most FINE_BOX px): the background removed (a smooth estimate only where the border shows
    uneven light, never above what the border shows, so thick blurry strokes are not eaten),
    contrast stretched between the noise floor and the strokes' level;
 4. the ink's box, without specks (connected components) or a stray fringe;
 5. stroke width measured and brought into NIST's range: thin pen lines thickened, marker
    strokes thinned;
 6. one antialiased resampling puts the box at the centre of the 28x28 output.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
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
# Stroke width as twice the area over the edge pixels at half intensity, measured on 3,000
# EMNIST test images: 2.0 / 2.5 / 3.6 px (5th / 50th / 95th percentile). Thinner strokes are
# thickened to MIN_STROKE_WIDTH, thicker ones thinned to MAX_STROKE_WIDTH.
MIN_STROKE_WIDTH = 2.0
MAX_STROKE_WIDTH = 3.6
# Blur as the share of half-tones (0.15-0.85) against the strokes' area (at half intensity):
# 0.46 / 0.67 / 0.92 on the same EMNIST images. Above BLURRED, edges are sharpened to SHARP.
BLURRED = 0.92
SHARP = 0.3

# Big images are reduced to this longer side first: a glyph needs far fewer pixels than a
# 12-megapixel photo has (core.images decodes a big JPEG at about this size already).
WORKING_SIDE = 512
# Pixel repetition is looked for up to this size (a 28 px glyph enlarged 70 times).
REPETITION_MAX_PIXELS = 4_000_000
# The paper and a first box are measured on a thumbnail this big (cheap, and averaging
# removes most noise); smaller pictures are measured as they are.
THUMB_SIDE = 96
# The glyph is finished at a resolution where its box is at most this big: 4x the output.
FINE_BOX = 4 * GLYPH_BOX
# A picture of a row of characters is measured on a thumbnail this big (`ink_map`).
ROW_THUMB_SIDE = 4 * THUMB_SIDE
_ROW_BLUR = 1.0  # px, sigma
_ROW_PAPER_WINDOW = 0.25  # of a row's shorter side: wider than its strokes

_INK_THRESHOLD = 0.5  # of the normalised ink level: what counts as a stroke
_MIN_INK_PIXELS = 4  # fewer stroke pixels than this: the image is empty
_MIN_CONTRAST = 0.06  # ink less than this far above the background is no ink at all
_NOISE_SIGMAS = 5.0  # the noise floor: this many noise sigmas above the background
_UNEVEN = 0.12  # border spread (share of the ink's contrast) above which light is uneven
_TRIM_MASS = 0.005  # the box ignores up to this share of stroke pixels at each side
_SPECK = 0.02  # components under this share of the largest one's area are specks

cv2.setNumThreads(1)  # parallelism comes from processes; threads only add latency here


def preprocess_image(image: np.ndarray | Image.Image) -> np.ndarray:
    """One picture -> float32 (28, 28) in [0, 1], ink bright, upright.

    `image` is a decoded picture as `core.images.decode_image` gives it (numpy, OpenCV's
    layout: (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) BGR or (H, W, 4) BGRA; uint8,
    uint16 or float in [0, 1]) or any PIL image. A picture without ink gives all zeros.
    """
    return _picture(grayscale(image))


def preprocess_batch(images: Iterable[np.ndarray | Image.Image]) -> np.ndarray:
    """Several pictures -> float32 (N, 28, 28, 1), the model's input.

    `images` is consumed one picture at a time and each is reduced at once: a big one is
    finished on its own, only small ones (at most THUMB_SIDE) are kept, so a generator of
    decoded pictures never has more than one big picture alive. Small pictures of one size (a
    batch of scanned characters) are measured and finished together, array operations over the
    whole stack; a picture gives the same glyph (to float rounding) whatever it is sent with."""
    glyphs: list[np.ndarray] = []
    alike: dict[tuple[tuple[int, ...], np.dtype], list[tuple[int, np.ndarray]]] = {}
    for index, image in enumerate(images):
        gray = grayscale(image)
        glyphs.append(_empty())
        if max(gray.shape) <= THUMB_SIDE:
            alike.setdefault((gray.shape, gray.dtype), []).append((index, gray))
        else:
            glyphs[index] = _picture(gray)
    for members in alike.values():
        if len(members) == 1:
            glyphs[members[0][0]] = _picture(members[0][1])
            continue
        finished, general = _small_pictures(_to_unit(np.stack([gray for _, gray in members])))
        for position, (index, gray) in enumerate(members):
            glyphs[index] = _picture(gray) if general[position] else finished[position]
    stacked = np.stack(glyphs) if glyphs else np.zeros((0, MODEL_INPUT_SIDE, MODEL_INPUT_SIDE))
    return stacked.astype(np.float32)[..., np.newaxis]


def ink_map(gray: np.ndarray) -> np.ndarray | None:
    """A whole picture's ink, for pictures of several characters (core.segmentation): float32
    (H, W), 0 on the paper, 1 at the strokes' cores, measured as for one glyph (polarity, uneven
    light, printed lines across the picture, noise floor). `gray` as `grayscale` gives it.
    None: no ink. The paper is measured on a larger thumbnail than one glyph's, since a row is
    wide and its characters small."""
    thumb = _to_unit(_reduce(gray, ROW_THUMB_SIDE))
    measured = _measure_paper(thumb)
    if measured is None:
        return None
    paper, _ = measured
    unit = _to_unit(gray)
    background = None
    if paper.background is not None:  # uneven light: the paper's level measured locally
        size = (unit.shape[1], unit.shape[0])
        background = cv2.resize(_row_background(thumb, paper), size, interpolation=cv2.INTER_LINEAR)
    # A photo at full resolution is noisy pixel by pixel (a glyph's window is averaged down
    # instead): a light blur, narrower than any stroke worth reading, before the noise floor.
    ink = cv2.GaussianBlur(paper.ink(unit, background), (0, 0), _ROW_BLUR)
    return _normalise_one(ink, _noise_floor(ink))


def _row_background(thumb: np.ndarray, paper: "Paper") -> np.ndarray:
    """Uneven light over a row, in ink space (as Paper.background): the paper's own level
    everywhere, strokes closed over by a morphological closing (an opening for light ink)
    wider than any stroke, a quarter of the picture's shorter side, then smoothed. One
    glyph's background is bounded by what its border shows; a row's light varies along it
    more than its border can tell."""
    side = max(3, round(_ROW_PAPER_WINDOW * min(thumb.shape))) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    operation = cv2.MORPH_CLOSE if paper.dark_ink else cv2.MORPH_OPEN
    level = cv2.morphologyEx(thumb, operation, kernel, borderType=cv2.BORDER_REPLICATE)
    level = cv2.blur(level, (side, side), borderType=cv2.BORDER_REPLICATE)
    return (paper.level - level) if paper.dark_ink else (level - paper.level)


def nist_to_model_input(images: np.ndarray) -> np.ndarray:
    """EMNIST images (N, 28, 28) uint8, upright, are already glyphs: only scale to [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., np.newaxis]


def _quantiles(values: np.ndarray, fractions: tuple[float, ...]) -> list[float]:
    """Quantiles (0..1, linear interpolation) of all the values, by one partition: numpy's
    general percentile machinery costs more than the work on arrays this small."""
    parted = values.ravel().copy()
    last = parted.size - 1
    positions = [q * last for q in fractions]
    lower = [int(p) for p in positions]
    parted.partition(sorted({*lower, *(min(i + 1, last) for i in lower)}))
    result = []
    for position, i in zip(positions, lower, strict=True):
        below = float(parted[i])
        result.append(below + (float(parted[min(i + 1, last)]) - below) * (position - i))
    return result


def _empty() -> np.ndarray:
    return np.zeros((MODEL_INPUT_SIDE, MODEL_INPUT_SIDE), dtype=np.float32)


def _picture(gray: np.ndarray) -> np.ndarray:
    """One picture, looked at on its own: a big one, or a small one under uneven light or
    on printed lines. -> (28, 28)."""
    small = max(gray.shape) <= THUMB_SIDE
    thumb = _to_unit(gray if small else _reduce(gray, THUMB_SIDE))
    measured = _measure_paper(thumb)
    if measured is None:
        return _empty()
    paper, ink = measured
    if small:  # finished as it is
        return _finish(ink[np.newaxis], np.array([paper.floor]))[0]
    box = _coarse_box(ink, paper.floor)
    if box is None:
        return _empty()
    # Finished on the window around the glyph, at a finer resolution than the thumbnail.
    window = _window_ink(gray, thumb.shape, box, paper)
    return _finish(window[np.newaxis], np.array([_noise_floor(window)]))[0]


# --- 1. Grayscale ---------------------------------------------------------------------------


def pixels_from_pil(image: Image.Image) -> np.ndarray:
    """A PIL image as a numpy array in OpenCV's layout (see preprocess_image)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _high_depth(image)
    if image.mode == "LAB":
        image = image.getchannel("L")
    elif image.mode in ("CMYK", "YCbCr", "HSV"):
        image = image.convert("RGB")
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")  # palette and tRNS transparency become an alpha channel
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L"))
    if image.mode in ("LA", "La", "PA"):
        return np.asarray(image.convert("LA"))
    if image.mode in ("RGBA", "RGBa"):
        return cv2.cvtColor(np.asarray(image.convert("RGBA")), cv2.COLOR_RGBA2BGRA)
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def _high_depth(image: Image.Image) -> np.ndarray:
    """16-bit integer images stay uint16; 32-bit integer and float ones become float [0, 1]."""
    values = np.asarray(image)
    if values.dtype == np.uint16 or image.mode.startswith("I;16"):
        return values.astype(np.uint16)
    values = values.astype(np.float32)
    top = float(values.max()) if values.size else 0.0
    full_scale = 1.0 if top <= 1.0 and image.mode == "F" else 255.0 if top <= 255 else 65535.0
    return np.clip(values / max(full_scale, top), 0.0, 1.0)


def grayscale(image: np.ndarray | Image.Image, side: int = WORKING_SIDE) -> np.ndarray:
    """(H, W) grey, no side longer than `side`, alpha composited: uint8, uint16 or float32 in
    [0, 1] (turned into float only where needed: the thumbnail, the window)."""
    pixels = pixels_from_pil(image) if isinstance(image, Image.Image) else image
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4) and _has_transparency(pixels):
        return _reduce(_composite(pixels), side)
    if pixels.ndim == 3:
        code = {2: None, 3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}[pixels.shape[2]]
        pixels = pixels[:, :, 0] if code is None else cv2.cvtColor(pixels, code)
    return _reduce(_undo_pixel_repetition(pixels), side)


def _undo_pixel_repetition(gray: np.ndarray) -> np.ndarray:
    """A small picture enlarged by repeating its pixels (nearest neighbour), enlarged again
    from its own resolution by interpolation: its blocks' sharp edges are not the strokes'
    edges. Both axes repeat, by about the same factor (a stroke along one axis repeats
    lines along that axis only). Not above REPETITION_MAX_PIXELS: its full-size comparisons
    would cost more memory than the picture's decode, and reducing it averages the blocks."""
    if min(gray.shape) < 32 or gray.size > REPETITION_MAX_PIXELS:
        return gray
    factor_y, factor_x = _repetition(gray), _repetition(gray.T)
    if min(factor_y, factor_x) < 1.5 or max(factor_y, factor_x) > 1.25 * min(factor_y, factor_x):
        return gray
    size = (round(gray.shape[1] / factor_x), round(gray.shape[0] / factor_y))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)


def _repetition(gray: np.ndarray) -> float:
    """How many times each row was repeated (1: not at all): varied rows per distinct varied
    row. A sample of rows first (cheap), all of them only where most varied rows repeat."""
    sample = np.linspace(0, len(gray) - 2, 24).astype(int)
    rows = gray[sample]
    varied = rows.max(axis=1) != rows.min(axis=1)
    repeated = (rows == gray[sample + 1]).all(axis=1) & varied
    if np.count_nonzero(varied) < 4 or np.count_nonzero(repeated) < 0.5 * np.count_nonzero(varied):
        return 1.0
    varied = gray.max(axis=1) != gray.min(axis=1)
    new = np.concatenate([[True], (gray[1:] != gray[:-1]).any(axis=1)]) & varied
    return np.count_nonzero(varied) / max(1, np.count_nonzero(new))


def _to_unit(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) * np.float32(1 / 255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) * np.float32(1 / 65535)
    return np.clip(pixels.astype(np.float32, copy=False), 0.0, 1.0)


def _has_transparency(pixels: np.ndarray) -> bool:
    alpha = pixels[:, :, -1]
    opaque = 65535 if pixels.dtype == np.uint16 else 255 if pixels.dtype == np.uint8 else 1.0
    return float(alpha.min()) < opaque


def _composite(pixels: np.ndarray) -> np.ndarray:
    """On a transparent canvas the opaque part is the ink: put it on a background it contrasts
    with (dark strokes on white, light strokes on black). float32 at full size."""
    colour = _to_unit(pixels[:, :, :-1])
    if colour.shape[2] == 1:
        luminance = colour[:, :, 0]
    else:
        luminance = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    alpha = _to_unit(np.ascontiguousarray(pixels[:, :, -1]))
    opaque_luminance = float((alpha * luminance).sum()) / max(float(alpha.sum()), 1e-6)
    background = 1.0 if opaque_luminance < 0.5 else 0.0
    return alpha * luminance + (1.0 - alpha) * np.float32(background)


def _reduce(image: np.ndarray, side: int) -> np.ndarray:
    """The image with its longer side brought down to `side` (never up); INTER_AREA averages
    every source pixel, so nothing aliases. The same array when already small enough."""
    longer = max(image.shape[:2])
    if longer <= side:
        return image
    factor = side / longer
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- 2. The paper ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Paper:
    """What the picture's paper is like, measured on the thumbnail."""

    dark_ink: bool  # dark ink on light paper (else light ink on a dark ground)
    level: float  # the paper's grey level at the border
    background: np.ndarray | None  # smooth ink-space background (thumbnail size) where uneven
    lines: bool  # printed lines across the whole picture (ruled or squared paper)
    floor: float  # noise floor of the ink on the thumbnail

    def ink(self, gray: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        """Bright ink over a zero background: the paper's light divided out (a stroke in a
        shadow is as dark as the rest), printed lines taken away."""
        background = self.background if background is None else background
        ink = (self.level - gray) if self.dark_ink else (gray - self.level)
        if background is not None:
            ink = ink - background
            if self.dark_ink:  # ink absorbs a share of the light falling on it
                ink /= np.maximum(self.level - background, 0.05)
        elif self.dark_ink:
            ink *= np.float32(1 / max(self.level, 0.05))
        if self.lines:
            ink = _remove_lines(ink)
        return ink


def _border(image: np.ndarray) -> np.ndarray:
    frame = max(1, round(0.03 * min(image.shape)))
    return np.concatenate(
        [
            image[:frame].ravel(),
            image[-frame:].ravel(),
            image[frame:-frame, :frame].ravel(),
            image[frame:-frame, -frame:].ravel(),
        ]
    )


def _measure_paper(thumb: np.ndarray) -> tuple[Paper, np.ndarray] | None:
    """Polarity, background and lines of the picture, from its thumbnail, and the thumbnail's
    ink; None: no ink at all."""
    border = _border(thumb)
    low, level, high = _quantiles(border, (0.1, 0.5, 0.9))
    darkest, brightest = _quantiles(thumb, (0.002, 0.998))
    uneven = high - low > _UNEVEN * (brightest - darkest)  # a gradient, a shadow's edge
    # Even light: the ink is the extreme farther from the paper (pen on paper, chalk on a
    # board alike).
    dark_ink = _dark_strokes(thumb) if uneven else level - darkest > brightest - level
    if ((level - darkest) if dark_ink else (brightest - level)) <= 0:
        return None
    background = None
    if uneven:
        ink = (level - thumb) if dark_ink else (thumb - level)
        ink_border = (level - border) if dark_ink else (border - level)
        background = _smooth_background(ink, _quantiles(ink_border, (0.95,))[0])
    ink = Paper(dark_ink, level, background, False, 0.0).ink(thumb)
    lines = _has_lines(ink)
    if lines:
        ink = _remove_lines(ink)
    if uneven or lines:
        floor = _noise_floor(ink)
    else:  # the ink's border is the paper's, scaled: its median is 0 and its spread known
        (deviation,) = _quantiles(cv2.absdiff(border, level), (0.5,))
        floor = _NOISE_SIGMAS * 1.4826 * deviation / (max(level, 0.05) if dark_ink else 1.0)
    return Paper(dark_ink, level, background, lines, floor), ink


def _dark_strokes(thumb: np.ndarray) -> bool:
    """Under uneven light the paper's extremes say nothing about the ink. The ink is what
    stands out farthest from its neighbourhood's median (the paper there, strokes being the
    minority of any wide window); a shadow's edge stands out both ways alike. The window is
    half the picture: in a smaller one a thick stroke is the majority, and the paper beside it
    then stands out as much as the stroke does."""
    size = max(3, min(thumb.shape) // 2) | 1
    local = cv2.medianBlur(_to_uint8(thumb), size).astype(np.float32) * np.float32(1 / 255)
    # Nearly the extremes: a small character on a big page is a few thumbnail pixels.
    darker, lighter = _quantiles(thumb - local, (0.0005, 0.9995))
    return -darker > lighter


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255 + 0.5).astype(np.uint8)


def _smooth_background(ink: np.ndarray, ceiling: float) -> np.ndarray:
    """The light's unevenness in ink space: a grey opening wider than any stroke (so strokes
    drop out), smoothed. Never above `ceiling`, the most the border shows: where a stroke is
    too thick for the opening (a low-resolution, blurry glyph), it would otherwise be taken
    for background and eaten."""
    width = _stroke_width(ink > 0.5 * float(ink.max()))
    side = max(ink.shape)
    size = int(min(side // 2, max(3 * width + 1, side / 6))) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    background = cv2.morphologyEx(ink, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    background = cv2.blur(background, (size, size), borderType=cv2.BORDER_REPLICATE)
    return np.minimum(background, np.float32(ceiling))


def _has_lines(ink: np.ndarray) -> bool:
    """Ruled or squared paper: at least two separate thin bands of rows (or columns) where ink
    runs across the whole picture. A stroke cropped tight (the bars of a Z) is thicker."""
    contrast = float(ink.max())
    for profile in (ink.min(axis=1), ink.min(axis=0)):
        if float(profile.max()) <= 0.1 * contrast:
            continue  # nothing runs across (the usual case: one cheap look)
        across = profile > 0.1 * contrast
        bands = int(np.count_nonzero(across[1:] & ~across[:-1])) + int(across[0])
        if bands >= 2 and across.sum() / bands <= max(1.5, 0.04 * len(profile)):
            return True
    return False


def _remove_lines(ink: np.ndarray) -> np.ndarray:
    """Take away what runs across the whole picture, row by row and column by column; a
    crossing is taken away once."""
    rows = np.maximum(ink.min(axis=1), 0)
    cols = np.maximum(ink.min(axis=0), 0)
    return ink - np.maximum(rows[:, np.newaxis], cols[np.newaxis, :])


def _noise_floor(ink: np.ndarray) -> float:
    """The level below which ink is indistinguishable from the paper's noise."""
    border = _border(ink)
    (median,) = _quantiles(border, (0.5,))
    (deviation,) = _quantiles(np.abs(border - np.float32(median)), (0.5,))
    sigma = 1.4826 * deviation  # robust noise sigma
    return median + _NOISE_SIGMAS * sigma


def _small_pictures(pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Small pictures of one size (N, H, W) float -> their glyphs (N, 28, 28), measured and
    finished together where the paper is even and has no printed lines (the usual scan);
    the others are flagged (N,) for `_picture`, which looks at them one by one."""
    count = len(pictures)
    border = _border_stack(pictures)
    low, level, high = _row_quantiles(border, (0.1, 0.5, 0.9))
    darkest, brightest = _row_quantiles(pictures.reshape(count, -1), (0.002, 0.998))
    dark_ink = level - darkest > brightest - level
    contrast = np.where(dark_ink, level - darkest, brightest - level)
    uneven = high - low > _UNEVEN * (brightest - darkest)
    scale = np.where(dark_ink, -1.0 / np.maximum(level, 0.05), 1.0)
    ink = (pictures - level[:, None, None].astype(np.float32)) * scale[:, None, None].astype(
        np.float32
    )
    ceiling = 0.1 * ink.max(axis=(1, 2))
    crossed = (ink.min(axis=2).max(axis=1) > ceiling) | (ink.min(axis=1).max(axis=1) > ceiling)
    (deviation,) = _row_quantiles(np.abs(border - level[:, None].astype(np.float32)), (0.5,))
    floor = _NOISE_SIGMAS * 1.4826 * deviation * np.abs(scale)
    glyphs = _finish(ink, floor)
    glyphs[contrast <= 0] = 0.0
    return glyphs, (uneven | crossed) & (contrast > 0)


def _border_stack(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, border pixels), the same frame as `_border`."""
    frame = max(1, round(0.03 * min(images.shape[1:])))
    count = len(images)
    return np.concatenate(
        [
            images[:, :frame].reshape(count, -1),
            images[:, -frame:].reshape(count, -1),
            images[:, frame:-frame, :frame].reshape(count, -1),
            images[:, frame:-frame, -frame:].reshape(count, -1),
        ],
        axis=1,
    )


def _row_quantiles(values: np.ndarray, fractions: tuple[float, ...]) -> list[np.ndarray]:
    """`_quantiles` of each row of (N, M) values: float64 (N,) per fraction."""
    last = values.shape[1] - 1
    positions = [q * last for q in fractions]
    lower = [int(p) for p in positions]
    parted = np.partition(values, sorted({*lower, *(min(i + 1, last) for i in lower)}), axis=1)
    result = []
    for position, i in zip(positions, lower, strict=True):
        below = parted[:, i].astype(np.float64)
        above = parted[:, min(i + 1, last)].astype(np.float64)
        result.append(below + (above - below) * (position - i))
    return result


# --- 3. The window around the glyph ---------------------------------------------------------


def _coarse_box(ink: np.ndarray, floor: float) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the ink on the thumbnail, exclusive ends; None: none."""
    strong = ink[ink > floor]
    if strong.size < _MIN_INK_PIXELS:
        return None
    (level,) = _quantiles(strong, (0.9,))
    mask = (ink > floor + 0.3 * (level - floor)).astype(np.uint8)
    return _components_box(mask)


def _components_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box around the connected components of `mask` that are not specks."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    if count == 2:  # one component, the usual glyph
        left, top, width, height, area = (int(v) for v in stats[1])
        return None if area < _MIN_INK_PIXELS else (top, top + height, left, left + width)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = stats[1:][areas >= max(2, _SPECK * areas.max())]
    if int(kept[:, cv2.CC_STAT_AREA].sum()) < _MIN_INK_PIXELS:
        return None
    left, top = kept[:, cv2.CC_STAT_LEFT].min(), kept[:, cv2.CC_STAT_TOP].min()
    right = (kept[:, cv2.CC_STAT_LEFT] + kept[:, cv2.CC_STAT_WIDTH]).max()
    bottom = (kept[:, cv2.CC_STAT_TOP] + kept[:, cv2.CC_STAT_HEIGHT]).max()
    return int(top), int(bottom), int(left), int(right)


def _window_ink(
    gray: np.ndarray, thumb_shape: tuple[int, ...], box: tuple[int, int, int, int], paper: Paper
) -> np.ndarray:
    """The ink of the window around the thumbnail's box, from the working image, reduced by a
    whole factor so that the glyph is at most FINE_BOX px. The window is aligned to that
    factor's grid, so the same picture content always gives the same pixels, wherever the
    window starts."""
    sy, sx = gray.shape[0] / thumb_shape[0], gray.shape[1] / thumb_shape[1]
    top, bottom, left, right = box
    factor = max(1, int(np.ceil(max(bottom - top, right - left) * max(sy, sx) / FINE_BOX)))
    margin = 2 + 0.15 * max(bottom - top, right - left)
    rows = _span(top - margin, bottom + margin, sy, factor, gray.shape[0])
    cols = _span(left - margin, right + margin, sx, factor, gray.shape[1])
    window = gray[rows[0] : rows[1], cols[0] : cols[1]]
    if factor > 1:
        pad_rows, pad_cols = -window.shape[0] % factor, -window.shape[1] % factor
        if pad_rows or pad_cols:
            window = cv2.copyMakeBorder(window, 0, pad_rows, 0, pad_cols, cv2.BORDER_REPLICATE)
        size = (window.shape[1] // factor, window.shape[0] // factor)
        window = cv2.resize(_to_unit(window), size, interpolation=cv2.INTER_AREA)  # averages
    else:
        window = _to_unit(window)
    background = None
    if paper.background is not None:  # the thumbnail's background, over the same window
        matrix = np.array(
            [[factor / sx, 0, cols[0] / sx], [0, factor / sy, rows[0] / sy]], np.float64
        )
        matrix[:, 2] += (matrix[:, 0] + matrix[:, 1]) / 2 - 0.5  # pixel centres
        background = cv2.warpAffine(
            paper.background,
            matrix,
            (window.shape[1], window.shape[0]),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return paper.ink(window, background)


def _span(start: float, end: float, scale: float, grid: int, limit: int) -> tuple[int, int]:
    """[start, end) in thumbnail px -> working px, widened to multiples of `grid`."""
    first = max(0, int(start * scale) // grid * grid)
    return first, min(limit, int(np.ceil(end * scale)))


# --- 4-6. The glyph -------------------------------------------------------------------------


def _finish(ink: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Ink (N, H, W), bright over a background ~0, of windows around one glyph each, and
    each one's noise floor -> the (N, 28, 28) model inputs; array operations over the whole
    stack, one small OpenCV call per glyph for its connected components."""
    if len(ink) == 1:  # one glyph: OpenCV calls on it beat array operations over a stack
        return _finish_one(ink[0], float(floor[0]))[np.newaxis]
    stretched, empty = _normalise(ink, floor)
    strokes = stretched > _INK_THRESHOLD
    stretched = _sharpen(stretched, strokes)
    boxes = np.zeros((len(ink), 4), dtype=np.int64)
    for index in np.flatnonzero(~empty):
        box = _components_box(strokes[index].view(np.uint8))
        if box is None:
            empty[index] = True
        else:
            boxes[index] = box
    top, bottom, left, right = _trimmed_boxes(strokes, boxes)
    scale = GLYPH_BOX / np.maximum(np.maximum(bottom - top, right - left), 1)
    _normalise_strokes(stretched, strokes, scale, empty)
    glyphs = _resample(stretched, (top + bottom) / 2, (left + right) / 2, scale)
    peak = glyphs.max(axis=(1, 2))
    empty |= peak <= 0
    glyphs *= (1.0 / np.where(empty, 1.0, peak)).astype(np.float32)[:, None, None]
    glyphs[empty] = 0.0  # EMNIST glyphs peak at 1; no ink, no glyph
    return np.minimum(glyphs, np.float32(1.0), out=glyphs)


def _finish_one(ink: np.ndarray, floor: float) -> np.ndarray:
    """`_finish` of one glyph (H, W) -> (28, 28): the same steps, as OpenCV calls."""
    stretched = _normalise_one(ink, floor)
    if stretched is None:
        return _empty()
    strokes = np.greater(stretched, _INK_THRESHOLD).view(np.uint8)
    area = cv2.countNonZero(strokes)
    half_tones = cv2.countNonZero(cv2.inRange(stretched, 0.15, 0.85)) / max(area, 1)
    if half_tones > BLURRED and area > 0:  # as _sharpen
        gain = np.float32(half_tones / SHARP)
        stretched = np.clip((stretched - np.float32(0.5)) * gain + np.float32(0.5), 0.0, 1.0)
    box = _components_box(strokes)
    if box is None:
        return _empty()
    top, bottom, left, right = box
    inside = strokes[top:bottom, left:right]
    first_row, last_row = _trimmed_extent(cv2.reduce(inside, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S))
    first_col, last_col = _trimmed_extent(cv2.reduce(inside, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S))
    top, bottom = top + first_row, top + last_row + 1
    left, right = left + first_col, left + last_col + 1
    scale = GLYPH_BOX / max(bottom - top, right - left)
    width = _stroke_width(strokes) * scale
    stretched = _stroke_to_range(stretched, width, scale)
    glyph = _resample_one(stretched, (top + bottom) / 2, (left + right) / 2, scale)
    peak = cv2.minMaxLoc(glyph)[1]
    if peak <= 0:
        return _empty()
    glyph *= np.float32(1 / peak)  # EMNIST glyphs peak at 1
    return np.minimum(glyph, np.float32(1.0), out=glyph)


def _normalise_one(ink: np.ndarray, floor: float) -> np.ndarray | None:
    """`_normalise` of one glyph; None: no ink."""
    strong = ink[ink > floor]
    if strong.size < _MIN_INK_PIXELS:
        return None
    (level,) = _quantiles(strong, (0.9,))  # the level of the strokes' cores
    if level - floor < _MIN_CONTRAST:
        return None
    stretched = (ink - np.float32(floor)) * np.float32(1 / (level - floor))
    return np.clip(stretched, 0.0, 1.0, out=stretched)


def _trimmed_extent(profile: np.ndarray) -> tuple[int, int]:
    """`_trimmed_extents` of one profile."""
    cumulative = profile.ravel().cumsum()
    total = int(cumulative[-1])
    first, last = cumulative.searchsorted(
        (int(_TRIM_MASS * total) + 1, (1 - _TRIM_MASS) * total)
    ).tolist()
    return first, max(first, min(last, len(cumulative) - 1))


def _stroke_to_range(ink: np.ndarray, width: float, scale: float) -> np.ndarray:
    """Strokes of `width` output px grown or shrunk into NIST's range (MIN..MAX)."""
    if width < MIN_STROKE_WIDTH:
        radius, operation = round((MIN_STROKE_WIDTH - width) / scale / 2), cv2.dilate
    elif width > MAX_STROKE_WIDTH:
        radius, operation = round((width - MAX_STROKE_WIDTH) / scale / 2), cv2.erode
    else:
        return ink
    if radius < 1:
        return ink
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return operation(ink, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def _normalise(ink: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ink stretched between the noise floor (0) and the strokes' level (1), and which of
    the stack has no ink at all."""
    count = len(ink)
    flat = ink.reshape(count, -1)
    strong = (flat > floor[:, None].astype(np.float32)).sum(axis=1)
    if count == 1:  # one partition beats a sort
        values = flat[0][flat[0] > np.float32(floor[0])]
        level = np.array(_quantiles(values, (0.9,)) if values.size else [0.0])
    else:  # the level of the strokes' cores: the 90th percentile of the strong values
        ordered = np.sort(flat, axis=1)
        position = flat.shape[1] - strong + 0.9 * np.maximum(strong - 1, 0)
        lower = np.minimum(position.astype(np.int64), flat.shape[1] - 1)
        upper = np.minimum(lower + 1, flat.shape[1] - 1)
        below = np.take_along_axis(ordered, lower[:, None], 1)[:, 0].astype(np.float64)
        above = np.take_along_axis(ordered, upper[:, None], 1)[:, 0].astype(np.float64)
        level = below + (above - below) * (position - lower)
    empty = (strong < _MIN_INK_PIXELS) | (level - floor < _MIN_CONTRAST)
    gain = 1.0 / np.where(empty, 1.0, level - floor)
    stretched = (ink - floor[:, None, None].astype(np.float32)) * gain[:, None, None].astype(
        np.float32
    )
    return np.clip(stretched, 0.0, 1.0, out=stretched), empty


def _sharpen(ink: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """Blurred strokes (out of focus, upscaled from a low resolution) given NIST's edges: the
    share of half-tones, against the strokes' area, measures blur relative to stroke width
    at any resolution; where it is beyond NIST's, a steeper ramp about the half level brings
    it down to SHARP, without moving the strokes' edges."""
    area = strokes.sum(axis=(1, 2))
    half_tones = ((ink >= 0.15) & (ink <= 0.85)).sum(axis=(1, 2)) / np.maximum(area, 1)
    blurred = (half_tones > BLURRED) & (area > 0)
    if not blurred.any():
        return ink
    gain = np.where(blurred, half_tones / SHARP, 1.0).astype(np.float32)[:, None, None]
    return np.clip((ink - np.float32(0.5)) * gain + np.float32(0.5), 0.0, 1.0)


def _trimmed_boxes(strokes: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each glyph's components' box (N, 4), ignoring a tiny share of its stroke pixels at
    either end: (top, bottom, left, right) arrays, exclusive ends."""
    top, bottom, left, right = boxes.T
    rows = np.arange(strokes.shape[1])
    cols = np.arange(strokes.shape[2])
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    inside = strokes & in_rows[:, :, None] & in_cols[:, None, :]
    first_row, last_row = _trimmed_extents(inside.sum(axis=2))
    first_col, last_col = _trimmed_extents(inside.sum(axis=1))
    return first_row, last_row + 1, first_col, last_col + 1


def _trimmed_extents(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each profile (N, L), ignoring _TRIM_MASS of its mass at
    either end: the first index whose running count exceeds the low trim, the first that
    reaches the high one."""
    cumulative = profiles.cumsum(axis=1)
    total = cumulative[:, -1:]
    first = (cumulative > np.floor(_TRIM_MASS * total)).argmax(axis=1)
    last = (cumulative >= (1 - _TRIM_MASS) * total).argmax(axis=1)
    return first, np.maximum(first, np.minimum(last, profiles.shape[1] - 1))


def _stroke_width(strokes: np.ndarray) -> float:
    """Mean stroke width in pixels: a stroke of width w and length L has area wL and 2L edge
    pixels (those a 3x3 erosion removes; beyond the border counts as background)."""
    strokes = strokes.view(np.uint8) if strokes.dtype == np.bool_ else strokes
    area = int(cv2.countNonZero(strokes))
    if area == 0:
        return 0.0
    interior = cv2.erode(strokes, None, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return 2.0 * area / max(area - int(cv2.countNonZero(interior)), 1)


def _stroke_widths(strokes: np.ndarray) -> np.ndarray:
    """`_stroke_width` of each of (N, H, W) bool: edge pixels are those a 3x3 erosion
    removes (beyond the border counts as background)."""
    across = strokes[:, :, :-2] & strokes[:, :, 1:-1] & strokes[:, :, 2:]
    interior = across[:, :-2] & across[:, 1:-1] & across[:, 2:]  # never on the border
    area = strokes.sum(axis=(1, 2))
    edge = area - interior.sum(axis=(1, 2))
    return 2.0 * area / np.maximum(edge, 1)


def _normalise_strokes(
    ink: np.ndarray, strokes: np.ndarray, scale: np.ndarray, empty: np.ndarray
) -> None:
    """Strokes thinner than NIST's at the output scale grown, thicker ones shrunk, in place."""
    width = _stroke_widths(strokes) * scale  # in output px
    outside = (width < MIN_STROKE_WIDTH) | (width > MAX_STROKE_WIDTH)
    for index in np.flatnonzero(~empty & outside):
        ink[index] = _stroke_to_range(ink[index], float(width[index]), float(scale[index]))


def _resample(
    ink: np.ndarray, centre_y: np.ndarray, centre_x: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """The (N, 28, 28) outputs with each glyph's centre at the centre, magnified by its scale:
    antialiased bilinear resampling (a triangle filter, widened by 1 / scale when reducing, as
    Pillow's), as two batched matrix products; beyond the window there is no ink. Exact at
    any sub-pixel position, so where a window starts does not matter."""
    rows = _resampling_weights(centre_y, scale, ink.shape[1])
    cols = _resampling_weights(centre_x, scale, ink.shape[2])
    return np.matmul(np.matmul(rows, ink), cols.transpose(0, 2, 1))


def _resample_one(ink: np.ndarray, centre_y: float, centre_x: float, scale: float) -> np.ndarray:
    """`_resample` of one glyph. Enlarged (scale >= 1), the triangle filter's support is one
    input pixel, which is bilinear interpolation: one OpenCV warp (the same to float
    rounding)."""
    if scale < 1.0:
        scales = np.array([scale])
        rows = _resampling_weights(np.array([centre_y]), scales, ink.shape[0])[0]
        cols = _resampling_weights(np.array([centre_x]), scales, ink.shape[1])[0]
        return rows @ ink @ cols.T
    half = MODEL_INPUT_SIDE / 2
    matrix = np.array(
        [
            [scale, 0.0, half - centre_x * scale + 0.5 * (scale - 1)],
            [0.0, scale, half - centre_y * scale + 0.5 * (scale - 1)],
        ]
    )
    side = (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE)
    return cv2.warpAffine(ink, matrix, side, flags=cv2.INTER_LINEAR, borderValue=0)


def _resampling_weights(centre: np.ndarray, scale: np.ndarray, length: int) -> np.ndarray:
    """(N, 28, length) weights: output pixel i from input pixels, along one axis."""
    support = np.maximum(1.0, 1.0 / scale)[:, None, None]  # in input px
    offsets = (np.arange(MODEL_INPUT_SIDE) + 0.5 - MODEL_INPUT_SIDE / 2)[None, :]
    outputs = (centre[:, None] + offsets / scale[:, None])[:, :, None]
    inputs = (np.arange(length) + 0.5)[None, None, :]  # pixel centres, edge coordinates
    weights = np.maximum(1.0 - np.abs(inputs - outputs) / support, 0.0) / support
    return weights.astype(np.float32)
