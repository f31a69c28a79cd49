"""core.segmentation: a row's picture -> one picture per character, on drawn shapes (each
property on its own) and on rows of real NIST holdout characters (testkit.rows)."""

import cv2
import numpy as np

from core.segmentation import ROW_SIDE, cut_boxes, form_lines, max_character_width, segment_row
from testkit.rows import make_rows

HEIGHT = 60


def blank(width: int, height: int = 120) -> np.ndarray:
    return np.full((height, width), 255, np.uint8)


def draw_shapes(image: np.ndarray, lefts: list[int], top: int = 30, width: int = 8) -> None:
    """An "O"-like ring at each left edge: HEIGHT px tall, ~0.7 as wide, pen `width` px."""
    for left in lefts:
        centre = (left + 21, top + HEIGHT // 2)
        cv2.ellipse(image, centre, (21, HEIGHT // 2), 0, 0, 360, 0, width)


def test_a_picture_without_ink_has_no_characters() -> None:
    assert segment_row(blank(400)) == []
    assert segment_row(np.zeros((50, 300), np.uint8)) == []  # black, no ink either


def test_separate_characters_are_found_left_to_right_with_their_boxes() -> None:
    image = blank(600)
    draw_shapes(image, [20, 110, 200, 290])
    segments = segment_row(image)
    assert [s.box[0] for s in segments] == sorted(s.box[0] for s in segments)
    assert len(segments) == 4
    for segment, left in zip(segments, [20, 110, 200, 290], strict=True):
        x, y, w, h = segment.box
        assert abs(x - (left - 4)) <= 3 and abs(w - 50) <= 4  # the ring's ink, pen included
        assert abs(y - 26) <= 3 and abs(h - HEIGHT - 8) <= 4
        assert segment.crop.dtype == np.float32 and segment.crop.max() > 0.9


def test_light_ink_on_dark_gives_the_same_characters() -> None:
    image = blank(600)
    draw_shapes(image, [20, 110, 200])
    dark = [s.box for s in segment_row(image)]
    assert [s.box for s in segment_row(255 - image)] == dark


def test_specks_are_dropped_and_a_wide_gap_is_a_space() -> None:
    image = blank(700)
    draw_shapes(image, [20, 90, 160, 400, 470])  # 20 px gaps, then 190 px
    rng = np.random.default_rng(0)
    for x, y in zip(rng.integers(0, 700, 12), rng.integers(0, 120, 12), strict=True):
        cv2.circle(image, (int(x), int(y)), 1, 0, -1)  # dust
    segments = segment_row(image)
    assert len(segments) == 5
    assert [s.space_before for s in segments] == [False, False, False, True, False]


def test_a_broken_stroke_is_one_character() -> None:
    image = blank(400)
    draw_shapes(image, [20, 200])
    cv2.line(image, (110, 30), (150, 30), 0, 8)  # a "T": its bar lifted off the stem
    cv2.line(image, (130, 42), (130, 90), 0, 8)
    segments = segment_row(image)
    assert len(segments) == 3
    assert abs(segments[1].box[0] - 106) <= 3 and segments[1].box[2] >= 44


def test_form_boxes_are_taken_away_and_the_characters_kept() -> None:
    image = blank(500, 140)
    lefts = [30, 130, 230, 330]
    draw_shapes(image, lefts, top=40)
    for left in lefts:  # a printed box around each, thinner than the pen
        cv2.rectangle(image, (left - 20, 20), (left + 62, 120), 0, 2)
    lines = form_lines(255 - image > 128)
    assert lines[20, 40] and lines[70, lefts[0] - 20]  # the box's top and side
    assert not lines[70, lefts[0] - 4 : lefts[0] + 4].any()  # the ring's own side is not
    segments = segment_row(image)
    assert len(segments) == 4
    assert all(h < 80 for _, _, _, h in (s.box for s in segments))  # the rings, not the boxes


def test_a_comb_across_the_row_is_taken_away_however_thick() -> None:
    image = blank(500, 140)
    draw_shapes(image, [30, 130, 230, 330], top=30)
    cv2.line(image, (0, 110), (499, 110), 0, 8)  # a baseline as thick as the pen
    assert len(segment_row(image)) == 4


def touching_pair() -> np.ndarray:
    image = blank(400)
    draw_shapes(image, [20, 150])
    draw_shapes(image, [188])  # overlaps the second ring: one piece of ink, two characters
    return image


def test_the_judge_decides_whether_a_wide_piece_is_two_characters() -> None:
    def prefers_narrow(crops: list[np.ndarray]) -> np.ndarray:
        return np.array([0.95 if c.shape[1] < 1.2 * c.shape[0] else 0.3 for c in crops])

    def prefers_whole(crops: list[np.ndarray]) -> np.ndarray:
        return np.array([0.95 if c.shape[1] >= 1.2 * c.shape[0] else 0.3 for c in crops])

    assert len(segment_row(touching_pair())) == 2  # no judge: not wide enough to cut alone
    split = segment_row(touching_pair(), judge=prefers_narrow)
    assert len(split) == 3
    first, second = split[1], split[2]
    assert first.box[0] + first.box[2] <= second.box[0] + 1  # cut, not overlapping
    assert len(segment_row(touching_pair(), judge=prefers_whole)) == 2


def test_the_expected_length_settles_the_count() -> None:
    assert len(segment_row(touching_pair(), expected_length=3)) == 3
    image = blank(600)
    draw_shapes(image, [20, 110, 200, 290])
    merged = segment_row(image, expected_length=3)
    assert len(merged) == 3


def test_boxes_are_in_the_given_pictures_pixels_when_it_is_reduced() -> None:
    small = blank(600)
    draw_shapes(small, [20, 110, 200])
    factor = 2 * ROW_SIDE / 600  # read at ROW_SIDE, half this size
    big = cv2.resize(small, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    for a, b in zip(segment_row(small), segment_row(big), strict=True):
        assert np.allclose(np.array(b.box) / factor, a.box, atol=3)


def test_rows_of_nist_characters_are_cut_into_their_characters() -> None:
    rows = [*make_rows(10, kind="canvas", seed=1), *make_rows(10, kind="photo", seed=2)]
    counted = [len(segment_row(row.image)) == len(row.text) for row in rows]
    assert sum(counted) >= 16, f"{sum(counted)}/20 rows cut into their number of characters"


def test_a_rows_own_boxes_are_cut_into_its_own_crops() -> None:
    """cut_boxes, given the boxes segment_row found, cuts the very crops it made: a corrected
    box's picture is made as the reader makes them."""
    images = [touching_pair(), *(r.image for r in make_rows(6, kind="canvas", seed=4))]
    images += [r.image for r in make_rows(4, kind="form", touching=True, seed=4)]
    for image in images:
        segments = segment_row(image, judge=lambda crops: np.full(len(crops), 0.5))
        for segment, crop in zip(
            segments, cut_boxes(image, [s.box for s in segments]), strict=True
        ):
            assert crop is not None and np.array_equal(crop, segment.crop)


def test_a_box_split_by_hand_gives_each_half_its_own_ink() -> None:
    image = touching_pair()
    [_, pair] = segment_row(image)  # no judge: the touching rings are one piece
    x, y, w, h = pair.box
    cut = x + w // 2
    left, right = cut_boxes(image, [(x, y, cut - x, h), (cut, y, x + w - cut, h)])
    assert left is not None and right is not None
    # Each half is its columns of the pair's ink, and nothing of its neighbour's.
    assert abs(left.shape[1] - right.shape[1]) <= 4 and left.shape[1] < 0.7 * pair.crop.shape[1]
    assert cut_boxes(image, [(x - 60, y, 20, h)]) == [None]  # between the rings: no ink
    assert cut_boxes(blank(300), [(10, 10, 50, 50)]) == [None]


def test_a_box_wider_than_one_character_is_told_by_the_rows_heights() -> None:
    assert max_character_width([100, 90, 110]) == 128  # 1.6 widths of at most 0.8 height
    assert max_character_width([]) == 0
