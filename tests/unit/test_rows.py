"""The row generator (testkit/rows.py) keeps its promises: the truth it returns matches the
picture it draws, touching pairs really touch, separate characters really stand apart, and
the kinds look like what they claim to be."""

import cv2
import numpy as np
import pytest

from core.config import EMNIST_BALANCED_LABELS
from testkit.rows import KINDS, MAX_LENGTH, MIN_LENGTH, Row, characters_needed, make_rows

COUNT = 25


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, bool], list[Row]]:
    made = {}
    for index, (kind, touching) in enumerate((k, t) for k in KINDS for t in (False, True)):
        offset = index * characters_needed(COUNT)
        made[kind, touching] = make_rows(COUNT, kind=kind, touching=touching, seed=7, offset=offset)
    return made


def _all(rows: dict[tuple[str, bool], list[Row]]) -> list[Row]:
    return [row for made in rows.values() for row in made]


def _dark(image: np.ndarray) -> np.ndarray:
    """Ink at half its level: darker than halfway between the paper (the median) and the
    darkest pixel. For the clean kinds, where the paper is even."""
    return image < (float(np.median(image)) + float(image.min())) / 2


def test_rows_have_3_to_12_characters_of_the_label_set(rows) -> None:
    for (kind, touching), made in rows.items():
        assert len(made) == COUNT
        for row in made:
            assert MIN_LENGTH <= len(row.text) <= MAX_LENGTH
            assert set(row.text) <= set(EMNIST_BALANCED_LABELS)
            assert len(row.boxes) == len(row.text)
            assert (row.kind, row.touching) == (kind, touching)
            assert row.image.dtype == np.uint8 and row.image.ndim == 2


def test_boxes_lie_inside_the_picture_and_hold_ink(rows) -> None:
    for row in _all(rows):
        height, width = row.image.shape
        for x, y, w, h in row.boxes:
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= width and y + h <= height
            inside = row.image[y : y + h, x : x + w].astype(float)
            # The box's darkest ink stands well below its paper, whatever the light.
            assert np.percentile(inside, 95) - inside.min() > 30, (row.kind, row.text)


def test_boxes_fit_the_ink_tightly_on_clean_pictures(rows) -> None:
    for row in rows["canvas", False] + rows["form", False]:
        dark = _dark(row.image)
        for x, y, w, h in row.boxes:
            inside = dark[y : y + h, x : x + w]
            assert inside[0].any() or inside[1].any(), "ink reaches the box's top"
            assert inside[-1].any() or inside[-2].any(), "ink reaches the box's bottom"
            assert inside[:, :2].any() and inside[:, -2:].any(), "ink reaches both sides"


def test_separate_characters_stand_apart(rows) -> None:
    for kind in KINDS:
        for row in rows[kind, False]:
            for (x0, _, w0, _), (x1, _, _, _) in zip(row.boxes, row.boxes[1:], strict=False):
                assert x0 + w0 < x1, (kind, row.text)


def _pair_is_one_component(image: np.ndarray, a: tuple, b: tuple) -> bool:
    """Whether one component of the dark pixels reaches into the part of a's box outside b's
    and the part of b's box outside a's: there it can only be a's ink and b's ink."""
    dark = _dark(image)
    _, labels = cv2.connectedComponents(dark.astype(np.uint8), connectivity=8)
    only = []
    for one, other in ((a, b), (b, a)):
        mask = np.zeros(dark.shape, bool)
        x, y, w, h = one
        mask[y : y + h, x : x + w] = True
        x, y, w, h = other
        mask[y : y + h, x : x + w] = False
        only.append(set(np.unique(labels[mask & dark])) - {0})
    return bool(only[0] & only[1])


def test_touching_rows_have_a_pair_whose_inks_are_one_component(rows) -> None:
    for kind in ("canvas", "form"):
        for row in rows[kind, True]:
            pairs = zip(row.boxes, row.boxes[1:], strict=False)
            assert any(_pair_is_one_component(row.image, a, b) for a, b in pairs), row.text


def test_separate_characters_are_not_one_component(rows) -> None:
    for row in rows["canvas", False]:
        pairs = zip(row.boxes, row.boxes[1:], strict=False)
        assert not any(_pair_is_one_component(row.image, a, b) for a, b in pairs)


def test_same_seed_same_rows_and_another_seed_other_rows() -> None:
    for kind in KINDS:
        first = make_rows(3, kind=kind, touching=True, seed=11)
        again = make_rows(3, kind=kind, touching=True, seed=11)
        other = make_rows(3, kind=kind, touching=True, seed=12)
        for a, b in zip(first, again, strict=True):
            assert a.text == b.text and a.boxes == b.boxes
            assert np.array_equal(a.image, b.image)
        assert any(
            a.image.shape != c.image.shape or a.boxes != c.boxes
            for a, c in zip(first, other, strict=True)
        )


def _background(row: Row) -> np.ndarray:
    """The pixels far from every character's box (the paper, and a form's lines)."""
    mask = np.ones(row.image.shape, bool)
    for x, y, w, h in row.boxes:
        mask[max(0, y - 4) : y + h + 4, max(0, x - 4) : x + w + 4] = False
    return row.image[mask]


def test_the_kinds_look_like_what_they_claim(rows) -> None:
    for row in rows["canvas", False]:
        background = _background(row)
        assert (background == 255).mean() > 0.99, "a canvas is white"
        assert background.min() > 127, "no ink at half its level outside the boxes"
        assert row.image.min() == 0, "drawn in black"
    for row in rows["photo", False]:
        background = _background(row).astype(float)
        assert background.std() > 1.0, "a photo has noise and uneven light"
        assert background.mean() < 235, "paper in a photo is grey"
        assert row.image.min() > 0, "ink in a photo is not black"
    for row in rows["form", False]:
        assert (_background(row) < 200).sum() > row.image.shape[1], "a form has printed boxes"


def test_character_sizes_vary_between_rows(rows) -> None:
    tallest = [max(h for *_, h in row.boxes) for row in _all(rows)]
    assert min(tallest) < 60 < max(tallest)
    assert max(tallest) - min(tallest) > 30


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        make_rows(1, kind="napkin")
