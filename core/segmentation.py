"""From a picture of a row of handwritten characters to one picture per character.

A row is a form field, a postcode, an amount, a short word in capitals: characters side by
side, left to right. Each step is decided by measurements of the picture:
 1. the ink, measured as the one preprocessing measures it (`core.preprocessing.ink_map`:
    polarity, uneven light, lines across the paper, noise), at up to ROW_SIDE px;
 2. a form's printed lines taken away (boxes drawn around each character, a comb): straight
    runs at least about a character's height long that are thinner than the pen's strokes,
    or horizontal runs across several characters;
 3. connected components of the strokes; pieces of one character (a broken stroke, a bar
    lifted off) merged where one lies above the other; small fragments joined to a close
    neighbour, or dropped as specks; neighbours almost touching joined where the model (the
    `judge`) reads them better as one;
 4. touching characters split: a piece far wider than tall and than the other characters is
    cut into as many as its width holds, each cut at the least ink of its column profile near
    where the cut would fall; a piece only somewhat wide is cut where the judge reads the
    parts better than the whole;
 5. `expected_length`, when the caller knows it, settles the count: the widest piece is
    split, or the two closest merged, until it matches.
Each character's picture is its own ink only (a neighbour reaching into its box is left out),
bright on black: `core.preprocessing` then makes it the model's input like any upload.
"""

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from core.preprocessing import grayscale, ink_map

# Rows are read at up to this longer side: 64 characters still get 32 px each.
ROW_SIDE = 2048

_STROKE = 0.5  # of the normalised ink: what counts as a stroke
_LINE_LENGTH = 0.8  # a form's vertical line is at least this share of the ink's height long,
_LINE_WIDTH = 0.5  # a horizontal one this share (boxes are at least half as wide as tall)
_LINE_THINNESS = 0.6  # ... and at most this share of the pen's stroke width thick,
_FRAME_THINNESS = 0.9  # ... or this share where it meets a line of the other direction,
_ACROSS = 3.0  # ... or, horizontal, this many ink heights long however thick
_OVERLAP = 0.5  # pieces overlapping by this share of the narrower one's width: one character
_SHORT = 0.5  # a piece under this share of the typical height (a bar) joins any it overlaps
_SPECK = 0.05  # pieces under this share of the largest one's area are not characters
_FRAGMENT = 0.35  # pieces under this share of the typical height both ways are fragments
_REACH = 0.3  # a fragment joins a neighbour at most this many character heights away
_CLOSE = 0.12  # neighbours closer than this share of the typical height may be one character
# Where the judge decides, each character beyond one must be earned: reading a piece as two
# characters has to be this much likelier than as one (a wide "P" read 0.67 as "P" is not an
# "X" and a "7" at 0.8 each). An insertion penalty, as speech recognisers have.
_EXTRA_CHARACTER = 0.5
_SURELY_WIDE = 1.6  # typical widths: a piece this wide more likely holds two characters,
_WIDE_ODDS = 2.0  # ... by this much, before the judge reads it
_CUTS = (0.35, 0.42, 0.5, 0.58, 0.65)  # shares of a piece's width where a judge tries a cut
_WIDE_ASPECT = 2.0  # a piece this much wider than tall ...
_WIDE = 2.2  # ... and this many typical character widths wide holds several characters
_MAYBE_WIDE_ASPECT = 1.1  # one this much wider than tall and ...
_MAYBE_WIDE = 1.3  # ... this many widths wide may: the judge decides
_NARROWEST = 0.5  # a typical width is at least this share of the height ("1"s are narrower)
_WIDEST = 0.8  # ... and at most this share (NIST characters: 0.7-0.8 of their height)
_SPACE_GAP = 2.5  # a gap this many times the median gap, and ...
_SPACE_HEIGHT = 0.5  # ... at least this share of a character's height, is a space
_MOSTLY = 0.5  # a box given (cut_boxes) holds a piece of ink this share of which lies in it,
_LARGELY = 0.15  # ... or that makes this share of the ink in it


@dataclass(frozen=True)
class Segment:
    """One character of the row."""

    box: tuple[int, int, int, int]  # x, y, width, height in the given picture's pixels
    crop: np.ndarray  # float32 (H, W) in [0, 1]: this character's ink only, bright on 0
    space_before: bool  # a gap much wider than the others separates it from the previous one


@dataclass(frozen=True)
class _Piece:
    """Ink believed to be one character: some connected components, within a column range
    (narrower than the components where a touching pair was cut)."""

    components: frozenset[int]
    left: int  # columns [left, right), rows [top, bottom), tight around its ink
    right: int
    top: int
    bottom: int
    area: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


# Reads character pictures (as Segment.crop) and says how sure it is of each: the model's top
# probability. Segmentation asks it where geometry alone cannot tell one character from two.
Judge = Callable[[list[np.ndarray]], np.ndarray]


class TooManyMarks(ValueError):
    """More separate marks than a row of characters could have: refused before the work that
    grows with their number (a picture of noise, a page of text)."""

    def __init__(self, marks: int) -> None:
        super().__init__(f"{marks} separate marks")
        self.marks = marks


def segment_row(
    image: np.ndarray,
    expected_length: int | None = None,
    judge: Judge | None = None,
    max_marks: int | None = None,
) -> list[Segment]:
    """The characters of a row, left to right; [] when the picture has no ink.

    `image` is a decoded picture in OpenCV's layout (see core.preprocessing.preprocess_image).
    More than `max_marks` connected pieces of ink: TooManyMarks.
    """
    gray = grayscale(image, ROW_SIDE)
    measured = _strokes(gray)
    if measured is None:
        return []
    ink, labels, pieces = measured
    if max_marks is not None and len(pieces) > max_marks:
        raise TooManyMarks(len(pieces))
    pieces = _join_stacked(labels, _drop_fragments(labels, pieces))
    pieces = _join_judged(ink, labels, pieces, judge)
    pieces = _split_wide(ink, labels, pieces, judge)
    if expected_length is not None:
        pieces = _to_length(labels, pieces, expected_length)
    scale = image.shape[1] / gray.shape[1]
    return _segments(ink, labels, pieces, scale)


def cut_boxes(
    image: np.ndarray, boxes: list[tuple[int, int, int, int]], scale: float = 1.0
) -> list[np.ndarray | None]:
    """Each box's character picture (as Segment.crop), cut from a row as `segment_row` cuts its
    segments: the same ink, the ink of the pieces within the box's columns, the same margin;
    None for a box without ink. `boxes` are (x, y, width, height) in the picture's own pixels,
    `scale` its width over the decoded array's (as `read_row`'s): a user's corrected boxes (a
    box split, two merged) become pictures like the ones the reader made."""
    gray = grayscale(image, ROW_SIDE)
    measured = _strokes(gray)
    crops: list[np.ndarray | None] = [None] * len(boxes)
    if measured is None:
        return crops
    ink, labels, _ = measured
    everywhere = np.bincount(labels.ravel())  # each component's ink
    factor = gray.shape[1] / (image.shape[1] * scale)  # picture pixels -> the ink's
    for index, (x, y, width, height) in enumerate(boxes):
        left, top = max(0, int(x * factor)), max(0, int(y * factor))
        right = min(ink.shape[1], int(np.ceil((x + width) * factor)))
        bottom = min(ink.shape[0], int(np.ceil((y + height) * factor)))
        inside = np.bincount(labels[top:bottom, left:right].ravel(), minlength=everywhere.size)
        inside[0] = 0
        # Its components: those mostly in the box (a whole character, its dot, its bar), and
        # those the box is largely made of (a character cut from its touching neighbour); not
        # a neighbour's stroke reaching into it.
        own = (inside >= _MOSTLY * everywhere) | (inside >= _LARGELY * inside.sum())
        components = frozenset(int(c) for c in np.flatnonzero(own & (inside > 0)))
        piece = _piece(labels, components, left, right)
        if piece.area > 0:
            crops[index] = _crop(ink, labels, piece)
    return crops


def _strokes(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[_Piece]] | None:
    """A row's ink (`ink_map`), its strokes' connected components (form lines taken away) as
    a labels image, and one piece each; None where there is no ink."""
    ink = ink_map(gray)
    if ink is None:
        return None
    strokes = ink > _STROKE
    # The lines' antialiased fringe goes with them, or it would be left as specks.
    lines = cv2.dilate(form_lines(strokes).view(np.uint8), np.ones((3, 3), np.uint8))
    strokes &= ~lines.astype(bool)
    labels, pieces = _components(strokes)
    return ink, labels, pieces


def max_character_width(heights: list[int]) -> int:
    """The widest box one character of a row may have, from its characters' heights (in any
    unit, the answer in the same): _SURELY_WIDE typical widths, a typical width taken at its
    widest (_WIDEST of the median height), so that no single wide character ("M", "W") is
    taken for several. A wider box more likely holds several characters: the reader splits
    such a piece where it can, and a correction may not label it as one."""
    return int(_SURELY_WIDE * _WIDEST * float(np.median(heights))) if heights else 0


def form_lines(strokes: np.ndarray) -> np.ndarray:
    """The printed lines of a form in a row's strokes (bool (H, W)). Candidates are straight
    runs: horizontal ones at least _LINE_WIDTH of the ink's height long (a box is at least
    half as wide as tall), vertical ones _LINE_LENGTH of it. A candidate is a line when it is
    clearly thinner than the pen (_LINE_THINNESS); or somewhat thinner (_FRAME_THINNESS) and
    meeting a line of the other direction, as a box's sides meet its top and bottom (a
    character's stem as thin would have to meet a long bar); or, horizontal, when it runs
    across _ACROSS heights (a comb's baseline), however thick."""
    rows = np.flatnonzero(strokes.any(axis=1))
    lines = np.zeros_like(strokes)
    if rows.size == 0:
        return lines
    height = int(rows[-1] - rows[0] + 1)
    mask = strokes.view(np.uint8)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    runs = {
        horizontal: cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones(kernel, np.uint8))
        for horizontal, kernel in (
            (True, (1, max(3, round(_LINE_WIDTH * height)))),
            (False, (max(3, round(_LINE_LENGTH * height)), 1)),
        )
    }
    pen = _pen(distance, mask & ~(runs[True] | runs[False]))
    framing = {True: np.zeros_like(strokes), False: np.zeros_like(strokes)}
    maybe: list[tuple[bool, np.ndarray]] = []
    for horizontal, run in runs.items():
        count, run_labels, stats, _ = cv2.connectedComponentsWithStats(run, connectivity=8)
        for index in range(1, count):
            run_mask = run_labels == index
            long_side = stats[index, cv2.CC_STAT_WIDTH if horizontal else cv2.CC_STAT_HEIGHT]
            thickness = _thickness(mask, run_mask, horizontal)
            if thickness <= _LINE_THINNESS * pen or (horizontal and long_side >= _ACROSS * height):
                lines |= run_mask
                framing[horizontal] |= run_mask
            elif thickness <= _FRAME_THINNESS * pen:
                maybe.append((horizontal, run_mask))
                framing[horizontal] |= run_mask
    near = {
        h: cv2.dilate(f.view(np.uint8), np.ones((5, 5), np.uint8)) > 0 for h, f in framing.items()
    }
    for horizontal, run_mask in maybe:
        if (run_mask & near[not horizontal]).any():
            lines |= run_mask
    return lines


def _pen(distance: np.ndarray, strokes: np.ndarray) -> float:
    """The pen's stroke width, measured as `_thickness` measures a run: twice the distance to
    the paper along the strokes' cores (where the distance peaks), the median taken."""
    ridge = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (strokes > 0)
    values = distance[ridge & (distance > 0)]
    return 2.0 * float(np.median(values)) if values.size else 0.0


def _thickness(mask: np.ndarray, run: np.ndarray, horizontal: bool) -> float:
    """How thick the strokes are across a straight run: at each point along it, the length of
    the unbroken ink crossing the run there, the median taken. A printed line is thin nearly
    all along (a corner, or a character crossing it, is a few points), even beside another
    (a double line between adjacent boxes); a run the opening found inside a thick stroke (the
    flat part of an "O"'s side) crosses all of that stroke."""
    crossing = _crossing_lengths(mask, vertical=horizontal)
    along = 0 if horizontal else 1
    widest = np.where(run, crossing, 0).max(axis=along)
    present = run.any(axis=along)
    return float(np.median(widest[present])) if present.any() else 0.0


def _crossing_lengths(mask: np.ndarray, vertical: bool) -> np.ndarray:
    """For each ink pixel, the length of the unbroken run of ink through it, up and down
    (`vertical`) or sideways; 0 on the paper."""
    ink = (mask.T if vertical else mask).astype(bool)
    starts = ink & ~np.pad(ink, ((0, 0), (1, 0)))[:, :-1]  # each row starts afresh
    ids = np.cumsum(starts.ravel()).reshape(ink.shape) * ink
    lengths = np.bincount(ids.ravel())
    lengths[0] = 0
    return lengths[ids].T if vertical else lengths[ids]


def _components(strokes: np.ndarray) -> tuple[np.ndarray, list[_Piece]]:
    """Connected components (8-neighbours): the labels image and one piece each."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(strokes.view(np.uint8), 8)
    pieces = []
    for index in range(1, count):
        left, top, width, height, area = (int(v) for v in stats[index])
        pieces.append(_Piece(frozenset({index}), left, left + width, top, top + height, area))
    return labels, sorted(pieces, key=lambda p: p.left)


def _piece(labels: np.ndarray, components: frozenset[int], left: int, right: int) -> _Piece:
    """The piece made of `components` within columns [left, right), tight around its ink."""
    own = np.isin(labels[:, left:right], list(components))
    rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
    if rows.size == 0:  # nothing there (a cut at the very edge): an empty piece
        return _Piece(components, left, left, 0, 0, 0)
    return _Piece(
        components,
        left + int(cols[0]),
        left + int(cols[-1]) + 1,
        int(rows[0]),
        int(rows[-1]) + 1,
        int(np.count_nonzero(own)),
    )


def _merge(labels: np.ndarray, a: _Piece, b: _Piece) -> _Piece:
    return _piece(labels, a.components | b.components, min(a.left, b.left), max(a.right, b.right))


def _join_stacked(labels: np.ndarray, pieces: list[_Piece]) -> list[_Piece]:
    """Pieces one above the other are one character (a broken stroke, a bar lifted off the
    stem): overlapping by _OVERLAP of the narrower one's width, or overlapping at all where one
    is short (under _SHORT of the typical height: a bar, a tail)."""
    pieces = list(pieces)
    height = _typical_height(pieces) if pieces else 0.0
    merged = True
    while merged:
        merged = False
        for i, j in _overlapping_pairs(pieces):
            a, b = pieces[i], pieces[j]
            overlap = min(a.right, b.right) - b.left
            short = min(a.height, b.height) < _SHORT * height
            if overlap >= _OVERLAP * min(a.width, b.width) or short:
                pieces[i] = _merge(labels, a, b)
                del pieces[j]
                merged = True
                break
    return sorted(pieces, key=lambda p: p.left)


def _overlapping_pairs(pieces: list[_Piece]) -> Iterator[tuple[int, int]]:
    """(i, j), i < j, of pieces (sorted by left) whose column ranges overlap."""
    for i, a in enumerate(pieces):
        for j in range(i + 1, len(pieces)):
            if pieces[j].left >= a.right:
                break  # sorted by left: none further can overlap a
            yield i, j


def _drop_fragments(labels: np.ndarray, pieces: list[_Piece]) -> list[_Piece]:
    """Fragments (small both ways: a speck, a lifted dot) join their nearest neighbour when
    it is close; the rest are specks of dirt or noise."""
    if len(pieces) < 2:
        return pieces
    height = _typical_height(pieces)
    whole = [p for p in pieces if max(p.width, p.height) >= _FRAGMENT * height]
    for fragment in (p for p in pieces if max(p.width, p.height) < _FRAGMENT * height):
        gaps = [max(p.left - fragment.right, fragment.left - p.right, 0) for p in whole]
        if gaps and min(gaps) <= _REACH * height:
            nearest = int(np.argmin(gaps))
            whole[nearest] = _merge(labels, whole[nearest], fragment)
    return sorted(whole, key=lambda p: p.left)


def _join_judged(
    ink: np.ndarray, labels: np.ndarray, pieces: list[_Piece], judge: Judge | None
) -> list[_Piece]:
    """Neighbours almost touching (a gap under _CLOSE of the typical height: a "D" drawn as a
    stem and a bowl) are joined when `judge` reads them together with more confidence than the
    product of their own times _EXTRA_CHARACTER; one judge call for all such pairs."""
    if judge is None or len(pieces) < 2:
        return pieces
    height = _typical_height(pieces)
    pairs = [
        i
        for i, (a, b) in enumerate(itertools.pairwise(pieces))
        if b.left - a.right < _CLOSE * height
    ]
    if not pairs:
        return pieces
    crops = []
    for i in pairs:
        both = _merge(labels, pieces[i], pieces[i + 1])
        crops += [_crop(ink, labels, both), *(_crop(ink, labels, p) for p in pieces[i : i + 2])]
    confidences = np.asarray(judge(crops)).reshape(len(pairs), 3)
    joined, skip = [], -1
    better = {
        i
        for i, (both, a, b) in zip(pairs, confidences, strict=True)
        if both > a * b * _EXTRA_CHARACTER
    }
    for i, piece in enumerate(pieces):
        if i == skip:
            continue
        if i in better and i + 1 < len(pieces):
            joined.append(_merge(labels, piece, pieces[i + 1]))
            skip = i + 1
        else:
            joined.append(piece)
    return joined


def _characters(pieces: list[_Piece]) -> list[_Piece]:
    """The pieces big enough to be characters rather than specks: what typical sizes are
    measured on, so that dust does not make every character look big."""
    largest = max(p.area for p in pieces)
    return [p for p in pieces if p.area >= _SPECK * largest]


def _typical_height(pieces: list[_Piece]) -> float:
    return float(np.median([p.height for p in _characters(pieces)]))


def _typical_width(pieces: list[_Piece]) -> float:
    """The median character's width, within what handwritten characters have: a row of a few
    characters, two of them touching, must not make the touching pair look typical."""
    width = float(np.median([p.width for p in _characters(pieces)]))
    height = _typical_height(pieces)
    return float(np.clip(width, _NARROWEST * height, _WIDEST * height))


def _split_wide(
    ink: np.ndarray, labels: np.ndarray, pieces: list[_Piece], judge: Judge | None
) -> list[_Piece]:
    """Touching characters. A piece far wider than tall and than the typical character is cut
    into as many as its width holds. A piece only somewhat wide (a touching pair, or one wide
    "M") is cut when `judge` reads the parts with more confidence, all together, than the
    whole; without a judge it stays whole."""
    if not pieces:
        return pieces
    width = _typical_width(pieces)
    options: dict[int, list[list[_Piece]]] = {}  # index -> ways to cut it
    for index, piece in enumerate(pieces):
        if piece.width > _MAYBE_WIDE_ASPECT * piece.height and piece.width > _MAYBE_WIDE * width:
            ways = _ways_to_cut(labels, piece, max(2, round(piece.width / width)))
            if ways:
                options[index] = ways
    chosen = {  # far too wide for one: cut where the ink is least, whatever a judge says
        i: options[i][0]
        for i, piece in enumerate(pieces)
        if i in options
        and piece.width > _WIDE_ASPECT * piece.height
        and piece.width > _WIDE * width
    }
    if judge is not None:
        chosen |= _judged_splits(ink, labels, pieces, options, judge, width)
    split = []
    for index, piece in enumerate(pieces):
        split.extend(chosen.get(index, [piece]))
    return split


def _judged_splits(
    ink: np.ndarray,
    labels: np.ndarray,
    pieces: list[_Piece],
    options: dict[int, list[list[_Piece]]],
    judge: Judge,
    width: float,
) -> dict[int, list[_Piece]]:
    """The pieces the judge reads better cut than whole, each with the way to cut it that it
    reads best: the product of the parts' confidences (the chance all are right), times the
    odds of each extra character given the piece's width, above the whole's confidence. One
    judge call for all."""
    crops = []
    for index, ways in options.items():
        crops.append(_crop(ink, labels, pieces[index]))
        crops.extend(_crop(ink, labels, part) for way in ways for part in way)
    if not crops:
        return {}
    confidences = iter(judge(crops))
    chosen = {}
    for index, ways in options.items():
        whole = next(confidences)
        scores = [float(np.prod([next(confidences) for _ in way])) for way in ways]
        best = int(np.argmax(scores))
        odds = _extra_character_odds(pieces[index].width / width)
        if scores[best] * odds ** (len(ways[best]) - 1) > whole:
            chosen[index] = ways[best]
    return chosen


def _extra_character_odds(widths: float) -> float:
    """How much likelier a piece `widths` typical characters wide is to hold one more
    character than the judge's reading alone says: below _SURELY_WIDE an extra character must
    be earned (_EXTRA_CHARACTER); above, it is expected, since the model reads two touching
    characters squeezed into one 28x28 picture as one with a confidence it has not earned
    (a touching "d9" is a "d" at 1.00)."""
    return _EXTRA_CHARACTER if widths < _SURELY_WIDE else _WIDE_ODDS


def _cut(labels: np.ndarray, piece: _Piece, parts: int) -> list[_Piece]:
    """`piece` in `parts` side by side, each cut at the column with the least ink within a
    third of a part of where an even cut would fall."""
    own = np.isin(
        labels[piece.top : piece.bottom, piece.left : piece.right], list(piece.components)
    )
    profile = np.convolve(own.sum(axis=0).astype(np.float32), np.ones(3) / 3, mode="same")
    step = piece.width / parts
    cuts = [piece.left]
    for k in range(1, parts):
        low = max(int(k * step - step / 3), cuts[-1] - piece.left + 1)
        high = min(int(k * step + step / 3) + 1, piece.width - 1)
        if low >= high:
            continue
        cuts.append(piece.left + low + int(np.argmin(profile[low:high])))
    return _cut_at(labels, piece, cuts[1:])


def _cut_at(labels: np.ndarray, piece: _Piece, columns: list[int]) -> list[_Piece]:
    """`piece` cut at these columns (increasing), its empty parts dropped."""
    edges = [piece.left, *columns, piece.right]
    parts = [_piece(labels, piece.components, a, b) for a, b in itertools.pairwise(edges)]
    return [p for p in parts if p.area > 0]


def _ways_to_cut(labels: np.ndarray, piece: _Piece, parts: int) -> list[list[_Piece]]:
    """Ways to cut a piece into `parts`: at the column profile's minima, and, for two, also at
    fixed shares of its width, since two touching characters do not always meet where the
    ink is least (a judge picks the way it reads best)."""
    ways = [_cut(labels, piece, parts)]
    if parts == 2:
        ways += [_cut_at(labels, piece, [piece.left + round(s * piece.width)]) for s in _CUTS]
    return [way for way in ways if len(way) == parts]


def _to_length(labels: np.ndarray, pieces: list[_Piece], length: int) -> list[_Piece]:
    """The caller's count of characters: split the widest piece in two, or merge the two
    closest neighbours, until the count matches (or nothing is left to split)."""
    pieces = list(pieces)
    while 0 < len(pieces) < length:
        widest = max(range(len(pieces)), key=lambda i: pieces[i].width)
        halves = _cut(labels, pieces[widest], 2)
        if len(halves) < 2:
            break
        pieces[widest : widest + 1] = halves
    while len(pieces) > max(length, 1):
        gaps = [b.left - a.right for a, b in itertools.pairwise(pieces)]
        closest = int(np.argmin(gaps))
        pieces[closest : closest + 2] = [_merge(labels, pieces[closest], pieces[closest + 1])]
    return pieces


def _segments(
    ink: np.ndarray, labels: np.ndarray, pieces: list[_Piece], scale: float
) -> list[Segment]:
    if not pieces:
        return []
    height = _typical_height(pieces)
    gaps = [b.left - a.right for a, b in itertools.pairwise(pieces)]
    space = max(
        _SPACE_GAP * max(float(np.median(gaps)) if gaps else 0.0, 1.0), _SPACE_HEIGHT * height
    )
    segments = []
    for index, piece in enumerate(pieces):
        box = (piece.left, piece.top, piece.width, piece.height)
        segments.append(
            Segment(
                box=tuple(round(v * scale) for v in box),  # type: ignore[arg-type]
                crop=_crop(ink, labels, piece),
                space_before=index > 0 and gaps[index - 1] > space,
            )
        )
    return segments


def _crop(ink: np.ndarray, labels: np.ndarray, piece: _Piece) -> np.ndarray:
    """The piece's own ink with a margin: its strokes, widened a little to take in their soft
    edges, and nothing of its neighbours."""
    margin = 2 + max(piece.width, piece.height) // 8
    top, bottom = max(0, piece.top - margin), min(ink.shape[0], piece.bottom + margin)
    left, right = max(0, piece.left - margin), min(ink.shape[1], piece.right + margin)
    own = np.isin(labels[top:bottom, left:right], list(piece.components))
    own[:, : piece.left - left] = False  # a cut piece owns its columns only
    own[:, piece.right - left :] = False
    edge = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    own = cv2.dilate(own.view(np.uint8), edge).astype(bool)
    return np.where(own, ink[top:bottom, left:right], np.float32(0.0)).astype(np.float32)
