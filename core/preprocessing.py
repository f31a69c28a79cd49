"""From any picture of one handwritten character to the model's input: a 28x28 NIST-like glyph.

The one preprocessing, shared by the API, the worker and the trainer (which trains on what it
makes of rendered pictures, trainer/rendered.py): compiled image operations (OpenCV) on numpy
arrays; the API never imports TensorFlow.

It is geometry: where the ink is, and where it goes in the 28x28 box. How the ink looks (a thin
pen or a marker, blur, low resolution, JPEG, noise) is left to the model, which is trained on
what this code makes of such pictures (issue 27). The steps, one code path for one picture or
a batch:
 1. grey, alpha composited, reduced to at most WORKING_SIDE (INTER_AREA);
 2. on a thumbnail (at most THUMB_SIDE; FINE_THUMB_SIDE where that one seems blank): the
    paper (its level at the border, which way the ink goes, uneven light, printed lines
    across the picture, the noise floor) and the box of the character (the largest piece of
    ink and the pieces near it or joined to it by faint ink, not marks farther off) - what a
    model looking at 28x28 cannot do for itself;
 3. the window around that box, at a resolution just fine enough for the glyph: ink over a
    zero background, stretched between the noise floor and the strokes' level;
 4. the ink's box there, scaled to GLYPH_BOX px on its longer side (aspect ratio kept),
    centred by the box as EMNIST's glyphs are, in one antialiased resampling.
Ink touching the picture's edges is ink (a client's own crop fills its picture): the paper is
measured where the border is paper, not wherever the border is.

The bundled model was trained on exactly what this code makes: a change for speed or clarity
must keep every output bit for bit (tests/unit/test_preprocessing_pinned.py, which also
compares a git revision's outputs with these on thousands of pictures).
"""

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

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
# Big images are reduced to this longer side first: a glyph needs far fewer pixels than a
# 12-megapixel photo has (core.images decodes a big JPEG at about this size already).
WORKING_SIDE = 512
# The paper and the character's box are measured on a thumbnail this big (cheap, and
# averaging removes most noise); smaller pictures are measured as they are.
THUMB_SIDE = 96
# ... and where that thumbnail seems blank, on one this big (a hairline, a small mark).
FINE_THUMB_SIDE = 256
# The glyph is finished at a resolution where its box is at most this big: 4x the output.
FINE_BOX = 4 * GLYPH_BOX
# A picture of a row of characters is measured on a thumbnail this big (`ink_map`).
ROW_THUMB_SIDE = 4 * THUMB_SIDE
_ROW_BLUR = 1.0  # px, sigma
_ROW_PAPER_WINDOW = 0.25  # of a row's shorter side: wider than its strokes

_INK_THRESHOLD = 0.5  # of the normalised ink level: what counts as a stroke
_MIN_INK_PIXELS = 4  # fewer stroke pixels than this: the image is empty
_MIN_SIDE = 2  # px: a picture thinner than this (a strip of noise) has no shape to read
_MIN_CONTRAST = 0.06  # ink less than this far above the background is no ink at all
_MIN_FLOOR = 0.02  # a noiseless picture's floor: above 8-bit rounding and the paper's estimate
_NOISE_SIGMAS = 5.0  # the noise floor: this many noise sigmas above the background
_FRAME = 0.1  # of the picture's shorter side: its border, where the paper's level is read
_EXTREME = 0.002  # of a thumbnail's pixels: not the extremes (dead pixels, a speck of dust)
_AMBIGUOUS = 0.35  # the border's level this far from both extremes says nothing of polarity
_UNEVEN = 0.12  # the paper's spread (share of the ink's contrast) above which light is uneven
_UNEVEN_WINDOW = 0.75  # of the picture's longer side: the paper's spread measured this wide
_PAPER_WINDOW = 1 / 3  # ... and, where uneven, its level followed this wide
_TRIM_MASS = 0.005  # the box ignores up to this share of stroke pixels at each side
_NEAR = 0.25  # pieces farther than this share of the character's size from it are marks

cv2.setNumThreads(1)  # parallelism comes from processes; threads only add latency here


def preprocess_image(image: np.ndarray | Image.Image) -> np.ndarray:
    """One picture -> float32 (28, 28) in [0, 1], ink bright, upright.

    `image` is a decoded picture as `core.images.decode_image` gives it (numpy, OpenCV's
    layout: (H, W) grey, (H, W, 2) grey + alpha, (H, W, 3) BGR or (H, W, 4) BGRA; uint8,
    uint16 or float in [0, 1]) or any PIL image. A picture without ink gives all zeros.
    """
    gray = grayscale(image)
    if min(gray.shape) < _MIN_SIDE:
        return _empty()
    if max(gray.shape) <= THUMB_SIDE:  # measured as it is
        return _glyph(gray, gray, itself=True)
    glyph = _glyph(gray, _reduce(gray, THUMB_SIDE))
    if not glyph.any():
        # A hairline or a small character the reduction averaged below ink's contrast (a fine
        # pen, a mark on a big page): looked for again on a finer thumbnail (at most ~10 ms
        # more; only a picture that seemed blank pays for it). Finer still, the noise of a
        # blank photo starts passing for strokes.
        fine = gray if max(gray.shape) <= FINE_THUMB_SIDE else _reduce(gray, FINE_THUMB_SIDE)
        glyph = _glyph(gray, fine)
    return glyph


def _glyph(gray: np.ndarray, pixels: np.ndarray, itself: bool = False) -> np.ndarray:
    """The glyph of `gray`, its paper and character found on `pixels`: a thumbnail of it, or
    (`itself`) the picture itself where it is small, whose own ink is then the glyph's."""
    thumb = _to_unit(pixels)
    # The extremes' share is a thumbnail's: on a finer one as many pixels, not more.
    extreme = _EXTREME * min(1.0, THUMB_SIDE**2 / thumb.size)
    measured = _measure_paper(thumb, pixels, extreme)
    if measured is None:
        return _empty()
    paper, ink = measured
    if not itself:
        faint = np.greater(ink, paper.floor).view(np.uint8)
        box = _character_box(_strokes(ink, paper.floor), faint)
        if box is None:
            return _empty()
        ink = _window_ink(gray, thumb.shape, box, paper)
    local = _on_local_paper(ink)
    # A thumbnail's own ink, unchanged, has its floor measured already.
    return _finish(local, paper.floor if itself and local is ink else _noise_floor(local))


def preprocess_batch(images: Iterable[np.ndarray | Image.Image]) -> np.ndarray:
    """Several pictures -> float32 (N, 28, 28, 1), the model's input: each exactly as
    `preprocess_image` makes it, one at a time (a generator of decoded pictures never has more
    than one alive)."""
    glyphs = [preprocess_image(image) for image in images]
    stacked = np.stack(glyphs) if glyphs else np.zeros((0, MODEL_INPUT_SIDE, MODEL_INPUT_SIDE))
    return stacked.astype(np.float32, copy=False)[..., np.newaxis]


def ink_map(gray: np.ndarray) -> np.ndarray | None:
    """A whole picture's ink, for pictures of several characters (core.segmentation): float32
    (H, W), 0 on the paper, 1 at the strokes' cores, measured as for one glyph (polarity, uneven
    light, printed lines across the picture, noise floor). `gray` as `grayscale` gives it.
    None: no ink. The paper is measured on a larger thumbnail than one glyph's, since a row is
    wide and its characters small."""
    pixels = _reduce(gray, ROW_THUMB_SIDE)
    thumb = _to_unit(pixels)
    measured = _measure_paper(thumb, pixels)
    if measured is None:
        return None
    paper, _ = measured
    unit = _to_unit(gray)
    background = None
    if paper.background is not None:  # uneven light: the paper's level measured locally
        size = (unit.shape[1], unit.shape[0])
        level = _row_background(thumb, pixels, paper)
        background = cv2.resize(level, size, interpolation=cv2.INTER_LINEAR)
    # A photo at full resolution is noisy pixel by pixel (a glyph's window is averaged down
    # instead): a light blur, narrower than any stroke worth reading, before the noise floor.
    ink = cv2.GaussianBlur(paper.ink(unit, background), (0, 0), _ROW_BLUR)
    return _normalise(ink, _noise_floor(ink))


def _row_background(thumb: np.ndarray, pixels: np.ndarray, paper: "Paper") -> np.ndarray:
    """Uneven light over a row, in ink space (as Paper.background): the paper's own level
    everywhere, strokes closed over by a morphological closing (an opening for light ink)
    wider than any stroke, a quarter of the picture's shorter side, then smoothed. One
    glyph's background is bounded by what its border shows; a row's light varies along it
    more than its border can tell."""
    side = max(3, round(_ROW_PAPER_WINDOW * min(thumb.shape))) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    operation = cv2.MORPH_CLOSE if paper.dark_ink else cv2.MORPH_OPEN
    level = _morphology(thumb, pixels, operation, kernel, cv2.BORDER_REPLICATE)
    level = cv2.blur(level, (side, side), borderType=cv2.BORDER_REPLICATE)
    return (paper.level - level) if paper.dark_ink else (level - paper.level)


def nist_to_model_input(images: np.ndarray) -> np.ndarray:
    """EMNIST images (N, 28, 28) uint8, upright, are already glyphs: only scale to [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / 255.0)[..., np.newaxis]


def _quantiles(values: np.ndarray, fractions: tuple[float, ...]) -> list[float]:
    """Quantiles (0..1, linear interpolation) of all the values, by one sort: numpy's general
    percentile machinery costs more than the work on arrays this small, and its sort is
    vectorised where a partition is not (a thumbnail that is mostly paper sorts in a third of
    the time a partition takes)."""
    ordered = values.flatten()
    ordered.sort()
    last = ordered.size - 1
    result = []
    for fraction in fractions:
        position = fraction * last
        i = int(position)
        below = float(ordered[i])
        result.append(below + (float(ordered[min(i + 1, last)]) - below) * (position - i))
    return result


def _empty() -> np.ndarray:
    return np.zeros((MODEL_INPUT_SIDE, MODEL_INPUT_SIDE), dtype=np.float32)


def _made_once(make: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """`make`'s arrays kept by its arguments and shared, so read-only: for the small constant
    arrays that calls taking microseconds would otherwise build every time."""

    @lru_cache(maxsize=64)
    def made(*args: object) -> np.ndarray:
        array = make(*args)
        array.flags.writeable = False
        return array

    return made


@_made_once
def _square(side: int) -> np.ndarray:
    """A square structuring element."""
    return np.ones((side, side), np.uint8)


# --- 1. Grey --------------------------------------------------------------------------------


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
    return _reduce(pixels, side)


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


# --- 2. The paper and the character's box ---------------------------------------------------


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
    """The picture's outer tenth on each side: wider than a form's printed frame, mostly paper
    even where a tight crop's strokes reach the edges."""
    frame = max(1, round(_FRAME * min(image.shape)))
    return image.take(_border_indices(image.shape, frame))


@_made_once
def _border_indices(shape: tuple[int, ...], frame: int) -> np.ndarray:
    """Where the border's pixels lie in the flattened picture: top, bottom, left and right
    strips in turn (a 1-px line's pixels twice). One `take`, not four slices joined."""
    at = np.arange(shape[0] * shape[1]).reshape(shape)
    strips = (at[:frame], at[-frame:], at[frame:-frame, :frame], at[frame:-frame, -frame:])
    return np.concatenate(strips, axis=None)


def _measure_paper(
    thumb: np.ndarray, pixels: np.ndarray, extreme: float = _EXTREME
) -> tuple[Paper, np.ndarray] | None:
    """Polarity, light and lines of the picture, from its thumbnail (`pixels` before
    `_to_unit`), and the thumbnail's ink; None: no ink at all. The paper's level is measured
    everywhere with the strokes closed over, not at the border: a character may fill its
    picture. `extreme`: the share of pixels at either end not taken as the ink's or the
    paper's extreme level (a dead pixel is not ink)."""
    darkest, brightest = _quantiles(thumb, (extreme, 1 - extreme))
    if brightest - darkest < _MIN_CONTRAST:
        return None
    (border_level,) = _quantiles(_border(thumb), (0.5,))
    dark_ink = border_level - darkest > brightest - border_level
    # Whether the light is uneven, on the paper with the strokes closed over by three quarters
    # of the picture: no stroke survives a closing that wide, light varying across the picture
    # does. Half the picture left the thick blurry strokes of a low-resolution tight crop
    # standing (39% of them taken for a shadow: 80% of those read, against 86% as even light).
    paper = _paper_levels(thumb, pixels, dark_ink, _UNEVEN_WINDOW)
    low, level, high = _quantiles(paper, (0.02, 0.5, 0.98))
    background = None
    if high - low > _UNEVEN * (brightest - darkest):  # a gradient, a shadow's edge
        # The border says which way the ink goes unless its level lies well between the
        # extremes (a shadow across it): then the strokes against their surroundings say.
        between = min(border_level - darkest, brightest - border_level)
        if between > _AMBIGUOUS * (brightest - darkest) and _dark_strokes(thumb) != dark_ink:
            dark_ink = not dark_ink
        # Followed closer where it is uneven: a wider window smooths a gradient's ends away.
        paper = _paper_levels(thumb, pixels, dark_ink, _PAPER_WINDOW)
        level = float(paper.max() if dark_ink else paper.min())
        background = (level - paper) if dark_ink else (paper - level)
    ink = Paper(dark_ink, level, background, False, 0.0).ink(thumb)
    lines = _has_lines(ink)
    if lines:
        ink = _remove_lines(ink)
    return Paper(dark_ink, level, background, lines, _noise_floor(ink)), ink


def _paper_levels(
    thumb: np.ndarray, pixels: np.ndarray, dark_ink: bool, window: float
) -> np.ndarray:
    """The paper's grey level at every point: the strokes closed over (dark ink; opened, for
    light ink) by a square `window` of the picture's longer side, wider than any stroke, then
    smoothed."""
    side = max(3, round(max(thumb.shape) * window)) | 1
    operation = cv2.MORPH_CLOSE if dark_ink else cv2.MORPH_OPEN
    kernel = _square(side)
    # Mirrored at the edges: a stroke along an edge stays a stroke, as wide as it is; light
    # goes on varying beyond the edge as it does inside.
    level = _morphology(thumb, pixels, operation, kernel, cv2.BORDER_REFLECT)
    return cv2.blur(level, (side, side), borderType=cv2.BORDER_REFLECT)


def _morphology(
    thumb: np.ndarray, pixels: np.ndarray, operation: int, kernel: np.ndarray, border: int
) -> np.ndarray:
    """A closing or an opening of the thumbnail. On 8- or 16-bit `pixels` where it was made
    from them: maxima and minima commute with `_to_unit`'s rescaling, which keeps the order,
    so the values are the same, and OpenCV's SIMD takes 4 (2) times as many pixels a step
    (half the time from 64x64 up; below, the integer path's fixed cost is the larger)."""
    if pixels.dtype in (np.uint8, np.uint16) and pixels.size >= 64 * 64:
        return _to_unit(cv2.morphologyEx(pixels, operation, kernel, borderType=border))
    return cv2.morphologyEx(thumb, operation, kernel, borderType=border)


def _dark_strokes(thumb: np.ndarray) -> bool:
    """Under uneven light the paper's extremes say nothing about the ink. The ink is what
    stands out farthest from its neighbourhood's median (the paper there, strokes being the
    minority of any wide window); a shadow's edge stands out both ways alike. The window is
    half the picture: in a smaller one a thick stroke is the majority, and the paper beside it
    then stands out as much as the stroke does."""
    size = max(3, min(thumb.shape) // 2) | 1
    local = cv2.medianBlur((thumb * 255 + 0.5).astype(np.uint8), size) * np.float32(1 / 255)
    # Nearly the extremes: a small character on a big page is a few thumbnail pixels.
    darker, lighter = _quantiles(thumb - local, (0.0005, 0.9995))
    return -darker > lighter


def _has_lines(ink: np.ndarray) -> bool:
    """Ruled or squared paper: at least two separate thin bands of rows (or columns) where ink
    runs across the whole picture. A stroke cropped tight (the bars of a Z) is thicker."""
    contrast = cv2.minMaxLoc(ink)[1]
    for axis, edge in ((1, ink[:, 0]), (0, ink[0])):
        # A line across the picture crosses its first column (row): the usual case, none
        # there, is one cheap look, and then no row's (column's) minimum is above it either.
        if float(edge.max()) <= 0.1 * contrast:
            continue
        profile = ink.min(axis=axis)
        if float(profile.max()) <= 0.1 * contrast:
            continue  # nothing runs across
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


def _on_local_paper(ink: np.ndarray) -> np.ndarray:
    """The glyph's ink from the paper's level around it, not the page's: light a little uneven
    across a big page put the paper around a small character above the noise floor, and noise
    clipped at white put it above the paper's level as measured (its closing reaches the
    noise's top): a grey box taken for ink. The level is the border's lower quartile (a tight
    crop's strokes fill some of it); the ink is only ever lowered."""
    (local_paper,) = _quantiles(_border(ink), (0.25,))
    return ink - np.float32(local_paper) if local_paper > 0 else ink


def _noise_floor(ink: np.ndarray) -> float:
    """The level below which ink is indistinguishable from the paper's noise: 5 sigmas. Sigma
    is measured on the ink's negative side (paper lighter than its level, for dark ink), which
    holds no strokes however much of the picture they fill, and from neighbouring pixels'
    differences, whichever is smaller: a blurry picture's grey fringe or a paper slightly off
    its level widens the negative side without being noise (a low-resolution tight crop's
    floor reached the strokes' own level)."""
    below = ink[ink < 0]
    if below.size < _MIN_INK_PIXELS:
        return _MIN_FLOOR
    (deviation,) = _quantiles(below, (0.5,))
    sigma = 1.4826 * -deviation
    if min(ink.shape) > 1:
        steps = cv2.absdiff(ink[:, 1:], ink[:, :-1])  # np.abs(np.diff(...)), a third the time
        (step,) = _quantiles(steps, (0.5,))
        sigma = min(sigma, 1.4826 * step / np.sqrt(2))
    return max(_MIN_FLOOR, _NOISE_SIGMAS * sigma)


def _strokes(ink: np.ndarray, floor: float) -> np.ndarray | None:
    """uint8 mask of the thumbnail's strokes: a third of the way from the noise floor to the
    strongest ink (a small character on a big page is a few pixels of it); None: no ink."""
    peak = cv2.minMaxLoc(ink)[1]
    if peak - floor < _MIN_CONTRAST:
        return None
    return np.greater(ink, floor + 0.3 * (peak - floor)).view(np.uint8)


def _character_box(
    strokes: np.ndarray | None, faint: np.ndarray
) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), exclusive ends, of the character's strokes: the largest piece
    of them and the pieces near it, not marks farther off on a page. Strokes are one piece
    where `faint` ink (above the noise floor) joins them - a hairline that averaging broke into
    fragments is still a line there, while paper lies between a character and the marks
    beside it - or where they are within a sixteenth of the picture (the dot of an i)."""
    if strokes is None or cv2.countNonZero(strokes) < _MIN_INK_PIXELS:
        return None
    grow = max(3, round(max(strokes.shape) / 16)) | 1
    joined = cv2.bitwise_or(cv2.dilate(strokes, _square(grow)), faint)
    # Most pictures are one piece, whose box is the strokes': counting the pieces costs a
    # tenth of measuring them (16-bit labels: half the time; a window has few pixels).
    labels_type = cv2.CV_16U if joined.size < 2**16 else cv2.CV_32S
    count, labels = cv2.connectedComponents(joined, connectivity=8, ltype=labels_type)
    if count == 2:
        x, y, w, h = cv2.boundingRect(strokes)
        return y, y + h, x, x + w
    # Each piece of strokes belongs to the joined piece that holds its pixels.
    found, stroke_labels, stats = cv2.connectedComponentsWithStats(
        strokes, connectivity=8, ltype=cv2.CV_32S
    )[:3]
    owner = np.zeros(found, np.int32)
    owner[stroke_labels] = labels  # any of a piece's pixels names its joined piece
    pieces: dict[int, list[int]] = {}  # joined piece -> [left, top, right, bottom, area]
    for (x, y, w, h, area), piece in zip(stats[1:].tolist(), owner[1:].tolist(), strict=True):
        if piece not in pieces:
            pieces[piece] = [x, y, x + w, y + h, 0]
        box = pieces[piece]
        box[:4] = min(box[0], x), min(box[1], y), max(box[2], x + w), max(box[3], y + h)
        box[4] += area
    left, top, right, bottom, _ = max(pieces.values(), key=lambda piece: piece[4])
    reach = _NEAR * max(right - left, bottom - top)
    kept = [
        box
        for box in pieces.values()
        if box[0] <= right + reach
        and box[2] >= left - reach
        and box[1] <= bottom + reach
        and box[3] >= top - reach
    ]
    lefts, tops, rights, bottoms, _ = zip(*kept, strict=True)
    return min(tops), max(bottoms), min(lefts), max(rights)


# --- 3. The window around the glyph ---------------------------------------------------------


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
    if max(thumb_shape) > THUMB_SIDE:
        # Found on the finer thumbnail: a hairline, which a coarser window averages away again.
        factor = min(factor, max(1, int(min(sy, sx))))
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


# --- 4. The glyph ---------------------------------------------------------------------------


def _finish(ink: np.ndarray, floor: float) -> np.ndarray:
    """Ink (H, W), bright over a background ~0, of a window around one glyph -> (28, 28)."""
    stretched = _normalise(ink, floor)
    if stretched is None:
        return _empty()
    strokes = np.greater(stretched, _INK_THRESHOLD).view(np.uint8)
    box = _character_box(strokes, np.greater(stretched, 0).view(np.uint8))
    if box is None:
        return _empty()
    top, bottom, left, right = box
    inside = strokes[top:bottom, left:right]
    first_row, last_row = _trimmed_extent(cv2.reduce(inside, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S))
    first_col, last_col = _trimmed_extent(cv2.reduce(inside, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S))
    top, bottom = top + first_row, top + last_row + 1
    left, right = left + first_col, left + last_col + 1
    scale = GLYPH_BOX / max(bottom - top, right - left)
    glyph = _resample(stretched, (top + bottom) / 2, (left + right) / 2, scale)
    peak = cv2.minMaxLoc(glyph)[1]
    if peak <= 0:
        return _empty()
    glyph *= np.float32(1 / peak)  # EMNIST glyphs peak at 1
    return np.minimum(glyph, np.float32(1.0), out=glyph)


def _normalise(ink: np.ndarray, floor: float) -> np.ndarray | None:
    """Ink stretched between the noise floor (0) and the strokes' level (1); None: no ink."""
    strong = ink[ink > floor]
    if strong.size < _MIN_INK_PIXELS:
        return None
    (level,) = _quantiles(strong, (0.9,))  # the level of the strokes' cores
    if level - floor < _MIN_CONTRAST:
        return None
    stretched = (ink - np.float32(floor)) * np.float32(1 / (level - floor))
    return np.clip(stretched, 0.0, 1.0, out=stretched)


def _trimmed_extent(profile: np.ndarray) -> tuple[int, int]:
    """First and last index of a profile, ignoring _TRIM_MASS of its mass at either end.
    (A profile is at most a few hundred counts: Python's own lists beat numpy's calls.)"""
    cumulative = list(accumulate(profile.ravel().tolist()))
    total = cumulative[-1]
    first = bisect_left(cumulative, int(_TRIM_MASS * total) + 1)
    last = bisect_left(cumulative, (1 - _TRIM_MASS) * total)
    return first, max(first, min(last, len(cumulative) - 1))


def _resample(ink: np.ndarray, centre_y: float, centre_x: float, scale: float) -> np.ndarray:
    """The 28x28 output with (centre_y, centre_x) (edge coordinates) at its centre, magnified
    by `scale`. Reducing, an antialiased triangle filter widened by 1 / scale (as Pillow's),
    as two matrix products: exact at any sub-pixel position, so where a window starts does not
    matter. Enlarging, the filter's support is one input pixel: one bilinear OpenCV warp."""
    if scale < 1.0:
        rows = _resampling_weights(centre_y, scale, ink.shape[0])
        cols = _resampling_weights(centre_x, scale, ink.shape[1])
        return rows @ ink @ cols.T
    half = MODEL_INPUT_SIDE / 2
    offset = 0.5 * (scale - 1)
    matrix = np.array(
        [
            [scale, 0.0, half - centre_x * scale + offset],
            [0.0, scale, half - centre_y * scale + offset],
        ]
    )
    side = (MODEL_INPUT_SIDE, MODEL_INPUT_SIDE)
    return cv2.warpAffine(ink, matrix, side, flags=cv2.INTER_LINEAR, borderValue=0)


# The output's pixel centres, from its middle (edge coordinates).
_OUTPUT_CENTRES = np.arange(MODEL_INPUT_SIDE) + 0.5 - MODEL_INPUT_SIDE / 2


@_made_once
def _pixel_centres(length: int) -> np.ndarray:
    """0.5, 1.5, ...: an axis's pixel centres in edge coordinates."""
    return np.arange(length) + 0.5


def _resampling_weights(centre: float, scale: float, length: int) -> np.ndarray:
    """(28, length) weights: output pixel i from input pixels, along one axis."""
    support = 1.0 / scale  # in input px
    outputs = centre + _OUTPUT_CENTRES / scale
    weights = np.abs(_pixel_centres(length)[np.newaxis, :] - outputs[:, np.newaxis])  # distance
    weights /= support
    np.subtract(1.0, weights, out=weights)
    np.maximum(weights, 0.0, out=weights)
    weights /= support
    return weights.astype(np.float32)
