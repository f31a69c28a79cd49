"""Rows of handwritten characters made of real NIST glyphs, to measure reading a whole row.

Every row is made of characters of the writer-disjoint holdout (`testkit.nist.balanced_holdout`:
evaluation only, never training), laid out as a person writes them: 3-12 characters, uneven
gaps, a wavering baseline, sizes varying per character and per row (40-90 px, so nothing can
be tuned to one size). Three kinds of picture, the ones users send:

- `canvas`: drawn on the web page's board, black on white, crisp smooth strokes;
- `photo`: a phone photo of paper: grey paper under uneven light, ink not quite black, a slight
  turn, blur, sensor noise and a JPEG round trip;
- `form`: written into the printed boxes of a form (one box per character, or a comb of
  adjacent boxes), box lines thinner than the pen's strokes.

`touching=True` pushes one adjacent pair together until their inks touch (one connected
component at half the ink's level), as hurried writing does. Each row keeps the truth: its
text and the box of each character's ink in the picture's pixels.

    from testkit.rows import make_rows
    rows = make_rows(100, kind="photo", touching=True, seed=1, offset=0)
"""

from dataclasses import dataclass

import cv2
import numpy as np

from testkit.corpus import crisp
from testkit.nist import balanced_holdout

KINDS = ("canvas", "photo", "form")
MIN_LENGTH, MAX_LENGTH = 3, 12
HEIGHTS = (40.0, 90.0)  # px a full-height character spans, drawn per row
GAPS = (0.15, 0.6)  # gap between characters, share of the row's character height
JITTER = 0.08  # baseline wobble, share of the height
SCALE_SPREAD = 0.10  # each character's size varies this much around the row's
NIST_BOX = 22.0  # px the longer side of a NIST glyph spans in its 28x28 image
FRINGE = 0.05  # coverage kept around a glyph when it is cropped: its soft edge
HALF = 0.5  # coverage at which a pixel is ink: boxes, and touching inks' one component
OVERLAP = (1, 4)  # px two touching inks overlap, at least
MAX_ROTATION = 2.0  # degrees, photos

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Row:
    """One picture of a row and its truth. `image` is uint8 grey, dark ink on light ground,
    as a user's picture; `boxes` are (x, y, w, h) of each character's ink, in `text`'s order."""

    image: np.ndarray
    text: str
    boxes: list[Box]
    kind: str
    touching: bool


@dataclass(frozen=True)
class Placed:
    """A character's ink coverage (float32 0..1, cropped to its ink and its soft edge) and
    where it lies."""

    ink: np.ndarray
    x: int
    y: int

    @property
    def box(self) -> Box:
        x, y, w, h = cv2.boundingRect((self.ink > HALF).astype(np.uint8))
        return self.x + x, self.y + y, w, h


@dataclass(frozen=True)
class Layout:
    """The characters placed on a picture of `shape`, and the form's printed lines (coverage)."""

    placed: list[Placed]
    shape: tuple[int, int]
    lines: np.ndarray | None = None


def characters_needed(count: int) -> int:
    """Holdout characters `count` rows may use at most: offsets this far apart never share."""
    return count * MAX_LENGTH


def make_rows(
    count: int, *, kind: str, touching: bool = False, seed: int = 0, offset: int = 0
) -> list[Row]:
    """`count` rows of `kind` made of the holdout characters from `offset` on, the same for
    the same arguments (numpy's generator, seeded)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, size=count)
    total = int(lengths.sum())
    images, chars = balanced_holdout(total, offset)
    if len(chars) < total:
        raise ValueError(f"the holdout has only {offset + len(chars)} characters")
    rows, start = [], 0
    for length in lengths:
        end = start + int(length)
        rows.append(_row(images[start:end], "".join(chars[start:end]), kind, touching, rng))
        start = end
    return rows


def _row(images: np.ndarray, text: str, kind: str, touching: bool, rng: np.random.Generator) -> Row:
    height = float(rng.uniform(*HEIGHTS))
    spread = rng.uniform(1 - SCALE_SPREAD, 1 + SCALE_SPREAD, size=len(images))
    inks = [
        _glyph(image, height * s / NIST_BOX, kind == "canvas")
        for image, s in zip(images, spread, strict=True)
    ]
    pair = int(rng.integers(0, len(inks) - 1)) if touching else None
    if kind == "form":
        layout = _form_layout(inks, height, pair, rng)
    else:
        layout = _free_layout(inks, height, pair, rng, rotation_room=kind == "photo")
    ink = _coverage(layout)
    if kind == "canvas":
        return Row(_to_uint8(255.0 * (1 - ink)), text, _boxes(layout), kind, touching)
    if kind == "form":
        return Row(_form_picture(ink, layout, rng), text, _boxes(layout), kind, touching)
    image, boxes = _photo(ink, layout, rng)
    return Row(image, text, boxes, kind, touching)


# --- Characters -------------------------------------------------------------------------------


def _glyph(image: np.ndarray, factor: float, sharp: bool) -> np.ndarray:
    """A NIST glyph's coverage scaled by `factor` (bicubic: smooth), cropped to its ink; crisp
    edges for a canvas drawing, which a pen draws sharp at any size."""
    ink = cv2.resize(
        image.astype(np.float32) / 255, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC
    )
    ink = crisp(ink) if sharp else np.clip(ink, 0.0, 1.0)
    x, y, w, h = cv2.boundingRect((ink > FRINGE).astype(np.uint8))
    return np.ascontiguousarray(ink[y : y + h, x : x + w])


def _edges(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per line of the glyph, the first and the last column with ink (-1 where none)."""
    mask = ink > HALF
    has = mask.any(axis=1)
    first = np.where(has, mask.argmax(axis=1), -1)
    last = np.where(has, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    return first, last


def _touching_x(left: Placed, right: np.ndarray, y: int, rng: np.random.Generator) -> int:
    """Where `right` (its top at `y`) must start so that its ink overlaps `left`'s by 1-4 px
    on the line where they come closest, pushed further until the two inks are one component."""
    top, bottom = max(left.y, y), min(left.y + left.ink.shape[0], y + right.shape[0])
    _, last = _edges(left.ink)
    first, _ = _edges(right)
    last, first = last[top - left.y : bottom - left.y], first[top - y : bottom - y]
    both = (last >= 0) & (first >= 0)
    reach = int((last[both] - first[both]).max()) if both.any() else left.ink.shape[1] - 1
    x = left.x + reach + 1 - int(rng.integers(OVERLAP[0], OVERLAP[1] + 1))
    while not touch(left, Placed(right, x, y)) and x > left.x - right.shape[1]:
        x -= 1
    return x


def touch(a: Placed, b: Placed) -> bool:
    """Whether the two inks, at half their level, share a connected component (4-connected,
    so they touch for any reader's connectivity)."""
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1 = max(a.x + a.ink.shape[1], b.x + b.ink.shape[1])
    y1 = max(a.y + a.ink.shape[0], b.y + b.ink.shape[0])
    masks = []
    for g in (a, b):
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        mask[g.y - y0 : g.y - y0 + g.ink.shape[0], g.x - x0 : g.x - x0 + g.ink.shape[1]] = (
            g.ink > HALF
        )
        masks.append(mask.astype(bool))
    _, labels = cv2.connectedComponents((masks[0] | masks[1]).astype(np.uint8), connectivity=4)
    return bool(set(np.unique(labels[masks[0]])) & set(np.unique(labels[masks[1]])))


# --- Layouts ----------------------------------------------------------------------------------


def _free_layout(
    inks: list[np.ndarray],
    height: float,
    pair: int | None,
    rng: np.random.Generator,
    rotation_room: bool,
) -> Layout:
    """Characters left to right, bottoms on a wavering baseline, uneven gaps; the pair after
    index `pair` touching."""
    placed: list[Placed] = []
    for i, ink in enumerate(inks):
        y = round(rng.uniform(-JITTER, JITTER) * height) - ink.shape[0]
        if not placed:
            x = 0
        elif i - 1 == pair:
            x = _touching_x(placed[-1], ink, y, rng)
        else:
            right = max(p.x + p.ink.shape[1] for p in placed)
            x = right + round(rng.uniform(*GAPS) * height)
        placed.append(Placed(ink, x, y))
    return _framed(placed, height, rng, rotation_room)


def _framed(
    placed: list[Placed], height: float, rng: np.random.Generator, rotation_room: bool
) -> Layout:
    """The characters moved onto a picture with margins around them (more above and below for
    a photo, whose turn moves the ends of a long row up and down)."""
    x0, y0 = min(p.x for p in placed), min(p.y for p in placed)
    width = max(p.x + p.ink.shape[1] for p in placed) - x0
    tall = max(p.y + p.ink.shape[0] for p in placed) - y0
    margin_x = round(rng.uniform(0.3, 0.8) * height)
    margin_y = round(rng.uniform(0.2, 0.5) * height)
    if rotation_room:
        margin_y += round((width + 2 * margin_x) * np.tan(np.radians(MAX_ROTATION)) / 2)
    moved = [Placed(p.ink, p.x - x0 + margin_x, p.y - y0 + margin_y) for p in placed]
    return Layout(moved, (tall + 2 * margin_y, width + 2 * margin_x))


def _form_layout(
    inks: list[np.ndarray], height: float, pair: int | None, rng: np.random.Generator
) -> Layout:
    """One printed box per character (a comb of adjacent boxes, or boxes apart), each
    character inside its box with a margin; a touching pair shares one double box."""
    margin = height * rng.uniform(0.15, 0.3)
    cell_w = round(max(i.shape[1] for i in inks) + 2 * margin)
    cell_h = round(max(i.shape[0] for i in inks) + 2 * margin)
    comb = bool(rng.random() < 0.5)
    spacing = 0 if comb else round(height * rng.uniform(0.1, 0.4))
    origin_x, origin_y = (
        round(rng.uniform(0.3, 0.8) * height),
        round(rng.uniform(0.2, 0.5) * height),
    )
    groups = [(i, i + 1) if i == pair else (i,) for i in range(len(inks)) if i - 1 != pair]
    placed: list[Placed] = []
    cells: list[Box] = []
    x = origin_x
    for group in groups:
        cell = (x, origin_y, cell_w * len(group), cell_h)
        placed += _in_cell([inks[i] for i in group], cell, margin, height, rng)
        cells.append(cell)
        x += cell[2] + spacing
    shape = (cell_h + 2 * origin_y, x - spacing + origin_x)
    return Layout(placed, shape, _printed_boxes(cells, shape, comb, rng))


def _in_cell(
    inks: list[np.ndarray], cell: Box, margin: float, height: float, rng: np.random.Generator
) -> list[Placed]:
    """One character, or a touching pair, inside `cell`: near its centre, bottom near the
    box's bottom margin, never closer to the lines than half the margin."""
    cx, cy, cw, ch = cell
    shift = min(JITTER * height, margin / 2)
    bottom = [round(cy + ch - margin + rng.uniform(-shift, shift)) for _ in inks]
    first = Placed(inks[0], 0, bottom[0] - inks[0].shape[0])
    group = [first]
    if len(inks) == 2:
        y = bottom[1] - inks[1].shape[0]
        group.append(Placed(inks[1], _touching_x(first, inks[1], y, rng), y))
    left = min(p.x for p in group)
    width = max(p.x + p.ink.shape[1] for p in group) - left
    slack = max(0.0, (cw - width) / 2 - margin / 2)
    x = round(cx + (cw - width) / 2 + rng.uniform(-slack / 2, slack / 2)) - left
    return [Placed(p.ink, p.x + x, p.y) for p in group]


def _printed_boxes(
    cells: list[Box], shape: tuple[int, int], comb: bool, rng: np.random.Generator
) -> np.ndarray:
    """The form's lines (coverage 0/1), 1-2 px: thinner than any pen stroke here."""
    lines = np.zeros(shape, np.uint8)
    thickness = int(rng.integers(1, 3))
    outlines = [(cells[0][0], cells[0][1], cells[-1][0] + cells[-1][2] - cells[0][0], cells[0][3])]
    for x, y, w, h in outlines if comb else cells:
        cv2.rectangle(lines, (x, y), (x + w, y + h), 255, thickness, cv2.LINE_8)
    if comb:
        for x, y, _, h in cells[1:]:
            cv2.line(lines, (x, y), (x, y + h), 255, thickness, cv2.LINE_8)
    return lines.astype(np.float32) / 255


# --- Pictures ---------------------------------------------------------------------------------


def _coverage(layout: Layout) -> np.ndarray:
    """The row's ink coverage (float32 0..1): where strokes cross, the darker one."""
    ink = np.zeros(layout.shape, np.float32)
    for p in layout.placed:
        h, w = p.ink.shape
        np.maximum(ink[p.y : p.y + h, p.x : p.x + w], p.ink, out=ink[p.y : p.y + h, p.x : p.x + w])
    return ink


def _boxes(layout: Layout) -> list[Box]:
    return [p.box for p in layout.placed]


def _to_uint8(picture: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


def _form_picture(ink: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """A scanned form: near-white paper, grey printed lines, dark pen ink over them."""
    paper, line, pen = rng.uniform(232, 255), rng.uniform(70, 150), rng.uniform(0, 60)
    lines = layout.lines if layout.lines is not None else np.zeros_like(ink)
    picture = paper * (1 - lines) + line * lines
    return _to_uint8(picture * (1 - ink) + pen * ink)


def _photo(
    ink: np.ndarray, layout: Layout, rng: np.random.Generator
) -> tuple[np.ndarray, list[Box]]:
    """A phone photo of the row on paper: grey paper under uneven light, ink not black, a
    slight turn, lens blur, sensor noise, then JPEG as the phone saves it."""
    paper, pen = rng.uniform(140, 215), rng.uniform(25, 85)
    picture = (paper * (1 - ink) + pen * ink) * _uneven_light(ink.shape, rng)
    h, w = ink.shape
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    picture = cv2.warpAffine(
        picture, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    picture = cv2.GaussianBlur(picture, (0, 0), rng.uniform(0.5, 1.1))
    picture = picture + rng.normal(0.0, rng.uniform(2.0, 6.0), picture.shape)
    quality = int(rng.integers(60, 81))
    _, data = cv2.imencode(".jpg", _to_uint8(picture), [cv2.IMWRITE_JPEG_QUALITY, quality])
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return image, [_turned_box(p, matrix, (h, w)) for p in layout.placed]


def _uneven_light(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Light falling across the paper: a tilt one way and darker corners (0.7..1.15)."""
    h, w = shape
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j].astype(np.float32)
    tilt_x, tilt_y = rng.uniform(-0.12, 0.12, size=2)
    vignette = rng.uniform(0.0, 0.15)
    return np.clip(1 + tilt_x * xx + tilt_y * yy - vignette * (xx**2 + yy**2) / 2, 0.7, 1.15)


def _turned_box(p: Placed, matrix: np.ndarray, shape: tuple[int, int]) -> Box:
    """The box of a character's ink after the photo's turn (its ink pixels, turned)."""
    rows, cols = np.nonzero(p.ink > HALF)
    points = np.stack([cols + p.x, rows + p.y], axis=1).astype(np.float32)[np.newaxis]
    turned = cv2.transform(points, matrix)[0]
    x0, y0 = np.maximum(np.rint(turned.min(axis=0)).astype(int), 0)
    x1 = min(int(np.rint(turned[:, 0].max())), shape[1] - 1)
    y1 = min(int(np.rint(turned[:, 1].max())), shape[0] - 1)
    return int(x0), int(y0), x1 - int(x0) + 1, y1 - int(y0) + 1
