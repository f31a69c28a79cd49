"""Pictures of real NIST characters as people make them, to measure what preprocessing reads.

Every kind of picture the service gets (see issue 12) is made from the same writer-disjoint
holdout characters (`emnist-holdout/`, the balanced slice: evaluation only, never training),
encoded as the file a user would send (PNG or JPEG bytes), and read back exactly as the API
reads it: `core.images.decode_image`, `core.preprocessing.preprocess_image`, the bundled ONNX
model. Each kind's accuracy is compared with the accuracy on the same characters sent as
plain 28x28 PNGs ("clean").

Parameters are drawn from ranges, not fixed, and there are two draws: `dev` (the first half of
the holdout, seed 1), which preprocessing may be looked at against, and `check` (the second
half, seed 2, and shifted nuisance ranges: other picture sizes, colours, line spacings), kept
for a final check that nothing was fitted to the first draw.

    from testkit.corpus import KINDS, load_characters, make_corpus, read_corpus
"""

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from core.config import EMNIST_BALANCED_LABELS, REPO_ROOT, get_settings

if TYPE_CHECKING:
    import onnxruntime as ort

BUNDLED_MODEL = REPO_ROOT / "trainer" / "bundled" / "model.onnx"
BALANCED_HOLDOUT = "emnist-holdout/emnist-balanced-train-103680-112799-images-idx3-ubyte.gz"
SEEDS = {"dev": 1, "check": 2}


@dataclass(frozen=True)
class Style:
    """Nuisance ranges that differ between the dev and the check draw."""

    check: bool

    def size(self, rng: np.random.Generator, low: int, high: int) -> int:
        """A picture side in [low, high] (dev) or [1.2 low, 1.5 high] (check)."""
        if self.check:
            low, high = int(low * 1.2), int(high * 1.5)
        return int(rng.integers(low, high + 1))


Maker = Callable[[np.ndarray, np.random.Generator, Style], bytes]


# --- Characters -------------------------------------------------------------------------------


def load_characters(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` holdout characters (upright uint8 28x28, white on black) and their class
    indices in the balanced label set: from the first half of the file for `dev`, the second
    for `check`, chosen by the split's seed."""
    from trainer.data import read_split

    path = get_settings().nist_data_dir / BALANCED_HOLDOUT
    holdout = read_split(path)
    half = len(holdout.labels) // 2
    first = 0 if split == "dev" else half
    chosen = first + np.random.default_rng(SEEDS[split]).permutation(half)[:count]
    chars = {n: sorted(c & set(EMNIST_BALANCED_LABELS))[0] for n, c in holdout.characters.items()}
    labels = np.array([EMNIST_BALANCED_LABELS.index(chars[int(n)]) for n in holdout.labels[chosen]])
    return holdout.images[chosen], labels


# --- Drawing helpers --------------------------------------------------------------------------


def glyph_box(glyph: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the ink, exclusive ends."""
    rows = np.flatnonzero(glyph.max(axis=1) > 64)
    cols = np.flatnonzero(glyph.max(axis=0) > 64)
    if rows.size == 0:
        return 0, 28, 0, 28
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def frame(
    glyph: np.ndarray, rng: np.random.Generator, height: int, width: int, fill: float = 0.7
) -> np.ndarray:
    """A float affine map (2x3) from the 28x28 glyph into a height x width picture: the glyph's
    box fills about `fill` of the picture's shorter side, off-centre by a random amount."""
    top, bottom, left, right = glyph_box(glyph)
    box = max(bottom - top, right - left)
    scale = fill * min(height, width) * rng.uniform(0.85, 1.15) / box
    cy, cx = (top + bottom) / 2, (left + right) / 2
    slack_y = max(0.0, (height - (bottom - top) * scale) / 2) * 0.6
    slack_x = max(0.0, (width - (right - left) * scale) / 2) * 0.6
    ty = height / 2 + rng.uniform(-slack_y, slack_y) - cy * scale
    tx = width / 2 + rng.uniform(-slack_x, slack_x) - cx * scale
    return np.array([[scale, 0, tx], [0, scale, ty]], dtype=np.float64)


def coverage(glyph: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """The glyph's ink coverage (float32 0..1) drawn through `matrix`, smooth (bicubic)."""
    ink = cv2.warpAffine(
        glyph.astype(np.float32) / 255, matrix, (width, height), flags=cv2.INTER_CUBIC
    )
    return np.clip(ink, 0.0, 1.0)


def pen(
    glyph: np.ndarray, matrix: np.ndarray, height: int, width: int, stroke: float
) -> np.ndarray:
    """The glyph redrawn with a round pen `stroke` px wide along its centre lines: the
    distance to the skeleton, scaled up smoothly, gives an antialiased stroke at any size."""
    distance = skeleton_distance(glyph.tobytes())
    to_picture = matrix.copy()
    to_picture[:, :2] /= 4  # the skeleton is at 4x the glyph's scale
    scale = matrix[0, 0] / 4
    far = cv2.warpAffine(
        distance, to_picture, (width, height), flags=cv2.INTER_LINEAR, borderValue=1e4
    )
    return np.clip(stroke / 2 - far * scale + 0.5, 0.0, 1.0)


@functools.lru_cache(maxsize=4096)
def skeleton_distance(glyph: bytes) -> np.ndarray:
    """Distance (px at 4x) to the glyph's centre lines; one per glyph, shared by the kinds."""
    skeleton = skeletonize(np.frombuffer(glyph, np.uint8).reshape(28, 28))
    return cv2.distanceTransform(np.where(skeleton, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)


def skeletonize(glyph: np.ndarray) -> np.ndarray:
    """The glyph's centre lines at 4x (112x112, bool): Zhang-Suen thinning."""
    big = cv2.resize(glyph, (112, 112), interpolation=cv2.INTER_LINEAR) > 100
    image = np.pad(big, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            removed = _thinning_step(image, step)
            if removed.any():
                image[1:-1, 1:-1][removed] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


def _thinning_step(image: np.ndarray, step: int) -> np.ndarray:
    """Pixels Zhang-Suen removes in this sub-step (neighbours p2..p9 clockwise from north)."""
    p = image
    nb = [
        p[:-2, 1:-1],
        p[:-2, 2:],
        p[1:-1, 2:],
        p[2:, 2:],
        p[2:, 1:-1],
        p[2:, :-2],
        p[1:-1, :-2],
        p[:-2, :-2],
    ]
    count = sum(n.astype(np.int16) for n in nb)
    ring = [*nb, nb[0]]
    transitions = sum(((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.int16) for i in range(8))
    p2, p4, p6, p8 = nb[0], nb[2], nb[4], nb[6]
    if step == 0:
        side = ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0)
    else:
        side = ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)
    centre = p[1:-1, 1:-1] == 1
    return centre & (count >= 2) & (count <= 6) & (transitions == 1) & side


def crisp(ink: np.ndarray) -> np.ndarray:
    """Sharp stroke edges for a picture drawn larger than 28 px (upscaling alone blurs them)."""
    return np.clip((ink - 0.25) / 0.5, 0.0, 1.0)


def on_paper(ink: np.ndarray, paper: tuple[float, ...], colour: tuple[float, ...]) -> np.ndarray:
    """RGB float picture: `colour` ink (0..1 per channel) over `paper`, by coverage."""
    ink3 = ink[..., np.newaxis]
    return np.asarray(paper, np.float32) * (1 - ink3) + np.asarray(colour, np.float32) * ink3


def grey_levels(rng: np.random.Generator) -> tuple[float, float]:
    """(paper, ink) grey levels of a scan or photo: light paper, dark ink."""
    return float(rng.uniform(0.75, 1.0)), float(rng.uniform(0.0, 0.35))


def to_uint8(picture: np.ndarray) -> np.ndarray:
    return (np.clip(picture, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def encode(picture: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    """uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA -> the file's bytes (Pillow)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=fmt, **params)
    return buffer.getvalue()


# --- The kinds --------------------------------------------------------------------------------


def clean(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """The NIST image itself, a 28x28 grey PNG (white on black)."""
    return encode(glyph)


def redrawn(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """The character redrawn with a uniform round pen (2.5-4.5 px) as a 28x28 PNG: the thin
    pen and the canvas drawing are drawn this way, and the model reads such strokes less well
    than the writer's own (the ceiling for those kinds; no preprocessing involved)."""
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return encode(to_uint8(pen(glyph, identity, 28, 28, rng.uniform(2.5, 4.5))))


def _low_res(glyph: np.ndarray, rng: np.random.Generator, style: Style, how: int) -> bytes:
    small = int(rng.integers(8, 21))
    paper, ink = grey_levels(rng)
    matrix = frame(glyph, rng, small, small, fill=rng.uniform(0.65, 0.9))
    # Drawn sharp at 8x and averaged down: a real low-resolution scan of a character.
    big = coverage(glyph, matrix * np.array([[8], [8]]), small * 8, small * 8)
    scan = cv2.resize(paper + (ink - paper) * big, (small, small), interpolation=cv2.INTER_AREA)
    side = style.size(rng, 64, 200)
    return encode(to_uint8(cv2.resize(scan, (side, side), interpolation=how)))


def low_res_bilinear(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Scanned at 8x8 to 20x20, then upscaled with bilinear interpolation (blurry, grey)."""
    return _low_res(glyph, rng, style, cv2.INTER_LINEAR)


def low_res_nearest(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Scanned at 8x8 to 20x20, then upscaled by repeating pixels (blocky)."""
    return _low_res(glyph, rng, style, cv2.INTER_NEAREST)


def blur(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A 64x64 picture out of focus: Gaussian blur of sigma 0.5-3 px."""
    side = 64 if not style.check else int(rng.integers(56, 97))
    paper, ink = grey_levels(rng)
    drawn = coverage(glyph, frame(glyph, rng, side, side, rng.uniform(0.6, 0.85)), side, side)
    sigma = rng.uniform(0.5, 3.0) * side / 64
    blurred = cv2.GaussianBlur(paper + (ink - paper) * drawn, (0, 0), sigma)
    return encode(to_uint8(blurred))


def thick_marker(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A felt marker on paper at high resolution: the writer's strokes widened to 5-7 px at
    the glyph's 28 px (NIST's are 2.3-4.9)."""
    side = style.size(rng, 300, 600)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.55, 0.8))
    scale = matrix[0, 0]
    radius = (rng.uniform(5.0, 7.0) - 3.5) / 2 * scale
    writer = crisp(coverage(glyph, matrix, side, side))
    # Grown by `radius` all round: the distance from the writer's strokes, antialiased.
    outside = np.where(writer < 0.5, 255, 0).astype(np.uint8)
    far = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    drawn = np.maximum(writer, np.clip(radius + 0.5 - far, 0.0, 1.0))
    paper, ink = grey_levels(rng)
    return encode(to_uint8(on_paper(drawn, (paper,) * 3, (ink, ink, ink * 1.3))))


def thin_pen(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A fine pen at high resolution: strokes 1-3 px in a 500-900 px picture."""
    side = style.size(rng, 500, 900)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.5, 0.8))
    drawn = pen(glyph, matrix, side, side, rng.uniform(1.0, 3.0))
    paper, ink = grey_levels(rng)
    return encode(to_uint8(paper + (ink - paper) * drawn))


def _paper_lines(side: int, rng: np.random.Generator, style: Style, grid: bool) -> np.ndarray:
    """Where the printed lines of ruled (or squared) paper are: float 0..1 coverage."""
    spacing = side * (rng.uniform(0.08, 0.2) if grid else rng.uniform(0.15, 0.3))
    if style.check:
        spacing *= 0.8
    width = rng.uniform(1.0, 2.5)
    axis = np.arange(side, dtype=np.float32)
    offset = rng.uniform(0, spacing)
    dist = np.abs((axis - offset + spacing / 2) % spacing - spacing / 2)
    profile = np.clip(width / 2 - dist + 0.5, 0.0, 1.0)
    lines = np.broadcast_to(profile[:, np.newaxis], (side, side))
    if grid:
        lines = np.maximum(lines, lines.T)
    return np.ascontiguousarray(lines)


def _lined(glyph: np.ndarray, rng: np.random.Generator, style: Style, grid: bool) -> bytes:
    side = style.size(rng, 150, 400)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.45, 0.7))
    drawn = crisp(coverage(glyph, matrix, side, side))
    paper = (rng.uniform(0.93, 1.0), rng.uniform(0.93, 1.0), rng.uniform(0.88, 1.0))
    line = (rng.uniform(0.45, 0.75), rng.uniform(0.6, 0.85), rng.uniform(0.8, 1.0))  # blue-ish
    if style.check:
        line = (line[2] * 0.8, line[1] * 0.9, line[0])  # greyish-red lines instead
    picture = on_paper(_paper_lines(side, rng, style, grid), paper, line)
    ink = np.array((0.1, 0.12, 0.3)) * rng.uniform(0.3, 1.5)
    picture = picture * (1 - drawn[..., np.newaxis]) + ink * drawn[..., np.newaxis]
    return encode(to_uint8(picture), "JPEG", quality=int(rng.integers(80, 96)))


def ruled_paper(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Written on ruled paper: light printed lines through and around the character."""
    return _lined(glyph, rng, style, grid=False)


def squared_paper(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Written on squared (graph) paper."""
    return _lined(glyph, rng, style, grid=True)


_INKS = [(0.1, 0.2, 0.7), (0.75, 0.1, 0.1), (0.1, 0.5, 0.2), (0.45, 0.1, 0.6), (0.4, 0.25, 0.1)]
_PAPERS = [
    (1.0, 0.95, 0.7),
    (1.0, 0.85, 0.88),
    (0.85, 1.0, 0.88),
    (0.82, 0.9, 1.0),
    (0.8, 0.7, 0.55),
]


def coloured_ink(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Coloured ink (blue, red, green, violet, brown) on tinted paper."""
    side = style.size(rng, 80, 300)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.55, 0.8))
    drawn = crisp(coverage(glyph, matrix, side, side))
    pick = int(rng.integers(len(_INKS)))
    ink = np.array(_INKS[pick]) * rng.uniform(0.8, 1.2)
    paper = np.array(_PAPERS[int(rng.integers(len(_PAPERS)))]) * rng.uniform(0.9, 1.0)
    if style.check:  # other hues: the channels turned round
        ink, paper = np.roll(ink, 1), np.roll(paper, 2)
    return encode(to_uint8(on_paper(drawn, tuple(paper), tuple(ink))))


def _light_field(side: int, rng: np.random.Generator) -> np.ndarray:
    """How much light falls on each point: a gradient, a soft-edged shadow, a vignette."""
    rows, cols = np.mgrid[:side, :side].astype(np.float32) / side
    angle = rng.uniform(0, 2 * np.pi)
    along = np.cos(angle) * (cols - 0.5) + np.sin(angle) * (rows - 0.5)
    light = 1.0 - rng.uniform(0.2, 0.5) * (along + 0.5)
    edge_angle = rng.uniform(0, 2 * np.pi)
    across = np.cos(edge_angle) * (cols - 0.5) + np.sin(edge_angle) * (rows - 0.5)
    softness = rng.uniform(0.03, 0.15)
    shadow = 1.0 / (1.0 + np.exp(-(across - rng.uniform(-0.3, 0.3)) / softness))
    light *= 1.0 - rng.uniform(0.25, 0.5) * shadow
    light *= 1.0 - rng.uniform(0.0, 0.4) * ((rows - 0.5) ** 2 + (cols - 0.5) ** 2)
    return light


def shadows(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A photo of paper under uneven light: a gradient, a shadow's soft edge, a vignette."""
    side = style.size(rng, 150, 400)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.5, 0.75))
    drawn = crisp(coverage(glyph, matrix, side, side))
    paper, ink = grey_levels(rng)
    picture = on_paper(drawn, (paper, paper * 0.97, paper * 0.9), (ink,) * 3)
    picture = picture * _light_field(side, rng)[..., np.newaxis]
    picture += rng.normal(0, 0.01, picture.shape).astype(np.float32)
    return encode(to_uint8(picture), "JPEG", quality=90)


def jpeg_q20(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Saved as a JPEG of quality 20: blocks and ringing around the strokes."""
    side = style.size(rng, 64, 300)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.55, 0.8))
    drawn = coverage(glyph, matrix, side, side)
    paper, ink = grey_levels(rng)
    picture = on_paper(drawn, (paper, paper * 0.98, paper * 0.93), (ink, ink, ink * 1.4))
    return encode(to_uint8(picture), "JPEG", quality=20)


def sensor_noise(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A dim photo: Gaussian sensor noise of sigma 4-12% of full scale."""
    side = style.size(rng, 64, 300)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.55, 0.8))
    drawn = coverage(glyph, matrix, side, side)
    paper, ink = grey_levels(rng)
    picture = paper + (ink - paper) * drawn
    picture += rng.normal(0, rng.uniform(0.04, 0.12), picture.shape).astype(np.float32)
    return encode(to_uint8(picture))


def rotation(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """The page turned by up to 15 degrees either way."""
    side = style.size(rng, 100, 300)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.5, 0.7))
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-15, 15), 1.0)
    matrix = turn @ np.vstack([matrix, [0, 0, 1]])
    drawn = coverage(glyph, matrix, side, side)
    paper, ink = grey_levels(rng)
    return encode(to_uint8(paper + (ink - paper) * drawn))


def on_page(
    glyph: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int],
    char: float,
    where: tuple[float, float],
) -> np.ndarray:
    """The glyph `char` px tall or wide on a page of `shape`, its centre drawn within
    `where` (shares of the page's height and width): crisp coverage."""
    height, width = shape
    top, bottom, left, right = glyph_box(glyph)
    scale = char / max(bottom - top, right - left)
    ty = rng.uniform(*where) * height - (top + bottom) / 2 * scale
    tx = rng.uniform(*where) * width - (left + right) / 2 * scale
    matrix = np.array([[scale, 0, tx], [0, scale, ty]])
    return crisp(coverage(glyph, matrix, height, width))


def small_on_page(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A small character (40-80 px) somewhere on a big page photo (400-900 px)."""
    height, width = style.size(rng, 400, 900), style.size(rng, 400, 900)
    drawn = on_page(glyph, rng, (height, width), rng.uniform(40, 80), (0.1, 0.9))
    paper, ink = grey_levels(rng)
    picture = paper + (ink - paper) * drawn
    picture *= 1.0 - 0.15 * np.linspace(0, 1, width, dtype=np.float32)[np.newaxis, :]
    picture += rng.normal(0, 0.015, picture.shape).astype(np.float32)
    return encode(to_uint8(picture), "JPEG", quality=88)


def inverted(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Light ink on a dark ground (chalk on a board, a negative)."""
    side = style.size(rng, 64, 300)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.55, 0.8))
    drawn = coverage(glyph, matrix, side, side)
    ground, chalk = rng.uniform(0.05, 0.35), rng.uniform(0.7, 1.0)
    return encode(to_uint8(ground + (chalk - ground) * drawn))


def transparent_png(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Strokes on a transparent background (alpha = coverage), dark or white ink."""
    side = style.size(rng, 64, 300)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.55, 0.8))
    drawn = crisp(coverage(glyph, matrix, side, side))
    colour = (1.0, 1.0, 1.0) if rng.random() < 0.25 else tuple(rng.uniform(0, 0.4, 3))
    rgba = np.empty((side, side, 4), np.float32)
    rgba[..., :3] = colour
    rgba[..., 3] = drawn
    return encode(to_uint8(rgba))


def canvas(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """The web page's board: 280x280 RGBA PNG, white strokes on opaque black, drawn with a
    round marker 6-40 px wide (the page's slider), the character anywhere on the board."""
    board = 280
    marker = rng.uniform(6, 40) if not style.check else rng.uniform(10, 30)
    matrix = frame(glyph, rng, board, board, rng.uniform(0.45, 0.85))
    drawn = pen(glyph, matrix, board, board, marker)
    rgba = np.empty((board, board, 4), np.float32)
    rgba[..., :3] = drawn[..., np.newaxis]
    rgba[..., 3] = 1.0
    return encode(to_uint8(rgba))


def _tight(glyph: np.ndarray, rng: np.random.Generator, scan: int | None) -> np.ndarray:
    """The character cropped to its ink (it touches all four edges), dark on light paper,
    upscaled 2-6x; `scan`: first scanned at that many pixels on its longer side."""
    top, bottom, left, right = glyph_box(glyph)
    height, width = bottom - top, right - left
    factor = rng.uniform(2.0, 6.0)
    out_h, out_w = max(2, round(height * factor)), max(2, round(width * factor))
    # Drawn sharp at 8x the output and averaged down, so the ink reaches every edge.
    matrix = np.array([[8 * factor, 0, -left * 8 * factor], [0, 8 * factor, -top * 8 * factor]])
    ink = coverage(glyph, matrix, out_h * 8, out_w * 8)
    ink = cv2.resize(ink, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if scan is not None:
        ratio = scan / max(out_h, out_w)
        small = (max(2, round(out_w * ratio)), max(2, round(out_h * ratio)))
        ink = cv2.resize(ink, small, interpolation=cv2.INTER_AREA)
        ink = cv2.resize(ink, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    paper, dark = grey_levels(rng)
    return paper + (dark - paper) * ink


def tight_crop(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Cropped to its ink, as a client's own segmentation or a form's box sends it: the ink
    touches every edge; upscaled 2-6x."""
    return encode(to_uint8(_tight(glyph, rng, None)))


def tight_crop_low_res(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """A tight crop scanned at 8-12 px on its longer side, then upscaled (blurry)."""
    return encode(to_uint8(_tight(glyph, rng, int(rng.integers(8, 13)))))


def in_a_box(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Written in a form's printed box (a comb), the character touching one of its edges."""
    side = style.size(rng, 90, 200)
    matrix = frame(glyph, rng, side, side, rng.uniform(0.6, 0.8))
    drawn = crisp(coverage(glyph, matrix, side, side))
    ys, xs = np.nonzero(drawn > 0.5)
    if ys.size:  # the box's edge through the ink's outermost row or column on one side
        edge = int(rng.integers(4))
        where = [ys.min(), ys.max(), xs.min(), xs.max()][edge]
        width = int(rng.integers(1, 4))
        box = np.zeros_like(drawn)
        low, high = max(0, where - width // 2), where - width // 2 + width
        if edge < 2:
            box[low:high, :] = 1.0
        else:
            box[:, low:high] = 1.0
        # The box's other edges, printed at the picture's border (the cell as cropped).
        inset = int(rng.integers(0, 4))
        band = slice(inset, inset + width)
        far_band = slice(side - inset - width, side - inset)
        for edge_band, axis in ((band, 0), (far_band, 0), (band, 1), (far_band, 1)):
            if axis == 0:
                box[edge_band, :] = 1.0
            else:
                box[:, edge_band] = 1.0
        drawn = np.maximum(drawn, box * rng.uniform(0.5, 0.9))
    paper, ink = grey_levels(rng)
    return encode(to_uint8(paper + (ink - paper) * drawn))


def among_marks(glyph: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """One character on a page among smaller marks (dots, ticks, short dashes)."""
    height, width = style.size(rng, 300, 600), style.size(rng, 300, 600)
    char = rng.uniform(60, 110)
    drawn = on_page(glyph, rng, (height, width), char, (0.3, 0.7))
    marks = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(4, 11))):
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        length = int(rng.integers(1, max(2, int(char * 0.12))))
        angle = rng.uniform(0, np.pi)
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        cv2.line(marks, (x, y), end, 255, int(rng.integers(1, 4)))
    drawn = np.maximum(drawn, marks.astype(np.float32) / 255)
    paper, ink = grey_levels(rng)
    return encode(to_uint8(paper + (ink - paper) * drawn), "JPEG", quality=90)


KINDS: dict[str, Maker] = {
    "clean": clean,
    "clean, redrawn with a uniform pen": redrawn,
    "low-res, bilinear": low_res_bilinear,
    "low-res, nearest": low_res_nearest,
    "blur": blur,
    "thick marker": thick_marker,
    "thin pen": thin_pen,
    "ruled paper": ruled_paper,
    "squared paper": squared_paper,
    "coloured ink, tinted paper": coloured_ink,
    "shadows and gradients": shadows,
    "JPEG quality 20": jpeg_q20,
    "sensor noise": sensor_noise,
    "rotation": rotation,
    "small on a big page": small_on_page,
    "inverted": inverted,
    "transparent PNG": transparent_png,
    "canvas drawing": canvas,
    "tight crop": tight_crop,
    "tight crop, low-res": tight_crop_low_res,
    "touching a form's box": in_a_box,
    "among smaller marks": among_marks,
}


# --- Making and reading ---------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    split: str
    labels: np.ndarray  # (N,) class indices in EMNIST_BALANCED_LABELS, the same for every kind
    pictures: dict[str, list[bytes]]  # kind -> N encoded files, one per character


def make_corpus(split: str, count: int, kinds: list[str] | None = None) -> Corpus:
    """`count` characters of the split, each drawn as every kind (or the kinds given)."""
    glyphs, labels = load_characters(split, count)
    style = Style(check=split == "check")
    pictures = {}
    for kind in kinds or list(KINDS):
        # Seeded by the kind's place in KINDS: a subset draws the same pictures.
        rng = np.random.default_rng([SEEDS[split], list(KINDS).index(kind)])
        pictures[kind] = [KINDS[kind](glyph, rng, style) for glyph in glyphs]
    return Corpus(split, labels, pictures)


Reader = Callable[[list[bytes]], np.ndarray]


def decoded(picture: bytes) -> np.ndarray:
    """An upload decoded as the API decodes it, with its limits."""
    from core.images import decode_image

    settings = get_settings()
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
    return decode_image(picture, **limits).image


def read_pictures(pictures: list[bytes]) -> np.ndarray:
    """What the API does to each upload before the model: decode, then preprocess.
    (N, 28, 28, 1) float32."""
    from core.preprocessing import MODEL_INPUT_SHAPE, preprocess_image

    glyphs = [preprocess_image(decoded(data)) for data in pictures]
    return np.stack(glyphs).reshape(-1, *MODEL_INPUT_SHAPE)


def crop_and_scale(gray: np.ndarray) -> np.ndarray:
    """The simplest pipeline that could do the job, the floor the service is compared with:
    ink bright (inverted when the border is light), an Otsu threshold, the ink's bounding box,
    its longer side scaled to 20 px, centred by its mass in 28x28 (as MNIST was made).
    (28, 28) float32 in [0, 1]."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = gray if np.median(border) < 128 else 255 - gray
    _, mask = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ys, xs = np.nonzero(mask)
    glyph = np.zeros((28, 28), np.float32)
    if not ys.size:
        return glyph
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    paper = float(np.median(ink[mask == 0])) if (mask == 0).any() else 0.0
    crop = np.clip((crop - paper) / max(float(crop.max()) - paper, 1.0), 0.0, 1.0)
    height, width = crop.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    total = float(small.sum()) or 1.0
    cy = float((small.sum(axis=1) * np.arange(small.shape[0])).sum()) / total
    cx = float((small.sum(axis=0) * np.arange(small.shape[1])).sum()) / total
    top = int(np.clip(round(13.5 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(13.5 - cx), 0, 28 - small.shape[1]))
    glyph[top : top + small.shape[0], left : left + small.shape[1]] = small
    return glyph


def read_pictures_naively(pictures: list[bytes]) -> np.ndarray:
    """The floor's reading: the API's decoder, then crop_and_scale. (N, 28, 28, 1) float32."""
    glyphs = [crop_and_scale(decoded(data)) for data in pictures]
    return np.stack(glyphs)[..., np.newaxis]


def bundled_session(model: Path = BUNDLED_MODEL) -> "ort.InferenceSession":
    """The bundled model, one thread (the API's session settings)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def correct_by_kind(
    corpus: Corpus, session: "ort.InferenceSession | None" = None, reader: Reader = read_pictures
) -> dict[str, np.ndarray]:
    """Whether the bundled model reads each of a kind's pictures as its label: (N,) bool."""
    session = session or bundled_session()
    name = session.get_inputs()[0].name
    result = {}
    for kind, pictures in corpus.pictures.items():
        predicted = session.run(None, {name: reader(pictures)})[0].argmax(axis=1)
        result[kind] = predicted == corpus.labels
    return result


def accuracy_by_kind(
    corpus: Corpus, session: "ort.InferenceSession | None" = None, reader: Reader = read_pictures
) -> dict[str, float]:
    """Share of each kind's pictures the bundled model reads as their label."""
    return {
        kind: float(right.mean())
        for kind, right in correct_by_kind(corpus, session, reader).items()
    }
