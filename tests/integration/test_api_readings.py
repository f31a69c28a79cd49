"""/v1/readings: rows of real NIST holdout characters read through HTTP with the bundled model,
stored in Postgres, corrected into samples; bad input refused with a 4xx naming the problem."""

import base64
import itertools
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from db.models import Reading, Sample
from db.session import get_sessionmaker
from testkit.rows import Row, make_rows

DIGITS = "0123456789"


def row_png(row: Row | np.ndarray) -> bytes:
    image = row.image if isinstance(row, Row) else row
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def read(client: TestClient, image: bytes, **form: str | int) -> dict:
    reply = client.post(
        "/v1/readings",
        files={"image": ("row.png", image, "image/png")},
        data={k: str(v) for k, v in form.items()},
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def count(model: type) -> int:
    with get_sessionmaker()() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def overlaps(box: list[int], truth: tuple[int, int, int, int]) -> bool:
    """The truth box's centre lies inside the reply's box."""
    x, y, w, h = box
    centre_x, centre_y = truth[0] + truth[2] / 2, truth[1] + truth[3] / 2
    return x <= centre_x <= x + w and y <= centre_y <= y + h


def test_rows_are_read_character_by_character_with_boxes(client: TestClient) -> None:
    rows = make_rows(12, kind="canvas", seed=3)
    right = total = 0
    for row in rows:
        body = read(client, row_png(row))
        got = body["text"].replace(" ", "")
        assert len(body["characters"]) == len(got)
        assert body["width"] == row.image.shape[1] and body["height"] == row.image.shape[0]
        if len(got) == len(row.text):
            right += sum(a == b for a, b in zip(got, row.text, strict=True))
            found = [
                overlaps(c["box"], t) for c, t in zip(body["characters"], row.boxes, strict=True)
            ]
            assert sum(found) >= len(found) - 1, (body["characters"], row.boxes)
        total += len(row.text)
        for character in body["characters"]:
            assert character["label"] == character["top"][0]["label"]
            assert character["low_confidence"] == (character["confidence"] < 0.7)
        assert body["confidence"] == pytest.approx(
            np.prod([c["confidence"] for c in body["characters"]]), rel=1e-6
        )
        assert client.get(f"/v1/readings/{body['id']}").json() == body
    # The bundled model reads ~88% of these holdout characters one by one.
    assert right / total >= 0.8, f"{right}/{total} characters right"
    assert count(Reading) == len(rows)


def test_a_field_of_digits_is_read_as_digits_only(client: TestClient) -> None:
    rows = [r for r in make_rows(40, kind="photo", seed=5) if set(r.text) <= set(DIGITS + "O")]
    rows = rows or make_rows(3, kind="photo", seed=5)
    for row in rows[:3]:
        body = read(client, row_png(row), labels=DIGITS)
        assert body["allowed_labels"] == DIGITS
        for character in body["characters"]:
            assert {c["label"] for c in character["top"]} <= set(DIGITS)


def test_the_expected_length_settles_touching_characters(client: TestClient) -> None:
    for row in make_rows(4, kind="canvas", touching=True, seed=7):
        body = read(client, row_png(row), expected_length=len(row.text))
        assert len(body["characters"]) == len(row.text)
        assert body["expected_length"] == len(row.text)


def test_form_boxes_are_not_read_as_characters(client: TestClient) -> None:
    rows = make_rows(6, kind="form", seed=11)
    same_count = sum(len(read(client, row_png(r))["characters"]) == len(r.text) for r in rows)
    assert same_count >= 5, f"{same_count}/6 rows segmented into their number of characters"


def test_a_correction_stores_each_misread_character_as_a_sample(client: TestClient) -> None:
    row = make_rows(1, kind="canvas", seed=13)[0]
    body = read(client, row_png(row), expected_length=len(row.text))
    read_text = body["text"].replace(" ", "")
    # The user's text: the truth, with the first character changed if it was read right, so
    # that at least one character is corrected.
    first = row.text[0] if row.text[0] != read_text[0] else ("7" if read_text[0] != "7" else "4")
    right_text = first + row.text[1:]
    wrong = [i for i, (a, b) in enumerate(zip(read_text, right_text, strict=True)) if a != b]
    reply = client.post(f"/v1/readings/{body['id']}/correction", json={"text": right_text})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert [c["index"] for c in result["corrected"]] == wrong
    assert result["reading"]["corrected_text"] == right_text
    for corrected in result["corrected"]:
        assert corrected["sample"]["source"] == "reading"
        assert corrected["label"] == right_text[corrected["index"]]
        assert corrected["read"] == read_text[corrected["index"]]
    with get_sessionmaker()() as session:
        stored = session.scalars(select(Sample).order_by(Sample.id)).all()
        assert [s.reading_id for s in stored] == [body["id"]] * len(wrong)
    # The stored picture is the character that was read: the model reads it again the same.
    sample_id = result["corrected"][0]["sample"]["id"]
    image = client.get(f"/v1/samples/{sample_id}/image").content
    again = client.post("/v1/predictions", files={"image": ("c.png", image, "image/png")})
    assert again.json()["label"] == result["corrected"][0]["read"]

    twice = client.post(f"/v1/readings/{body['id']}/correction", json={"text": right_text})
    assert twice.status_code == 409 and twice.json()["error"] == "already_corrected"
    assert count(Sample) == len(wrong)


@pytest.mark.parametrize(
    ("text", "error"),
    [("12", "length_mismatch"), ("€" * 40, "length_mismatch"), (None, "invalid_label")],
)
def test_a_correction_that_does_not_fit_is_refused_and_stores_nothing(
    client: TestClient, text: str | None, error: str
) -> None:
    row = make_rows(1, kind="canvas", seed=17)[0]
    body = read(client, row_png(row))
    length = len(body["characters"])
    reply = client.post(
        f"/v1/readings/{body['id']}/correction", json={"text": text or "€" * length}
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == error
    assert count(Sample) == 0
    assert client.get(f"/v1/readings/{body['id']}").json()["corrected_text"] is None


def test_bad_rows_get_a_4xx_naming_the_problem_and_nothing_is_stored(client: TestClient) -> None:
    blank = np.full((120, 600), 255, np.uint8)
    bars = np.full((80, 70 * 12), 255, np.uint8)
    for k in range(70):  # 70 separate strokes: more characters than one row may hold
        cv2.line(bars, (6 + 12 * k, 20), (6 + 12 * k, 60), 0, 3)
    dots = np.full((1000, 1000), 255, np.uint8)
    dots[::12, ::12] = 0  # ~7,000 specks: refused before work that grows with their number
    dots = cv2.erode(dots, np.ones((3, 3), np.uint8))
    row = row_png(make_rows(1, kind="canvas", seed=19)[0])
    cases = [
        ({"image": ("d.png", row_png(dots), "image/png")}, {}, 422, "too_many_characters"),
        ({"image": ("b.png", row_png(blank), "image/png")}, {}, 422, "no_characters"),
        ({"image": ("b.png", row_png(bars), "image/png")}, {}, 422, "too_many_characters"),
        ({"image": ("r.png", row, "image/png")}, {"expected_length": "65"}, 422, None),
        ({"image": ("r.png", row, "image/png")}, {"labels": "x!?"}, 422, "invalid_labels"),
        ({"image": ("r.png", b"not an image", "image/png")}, {}, 415, "unsupported_image"),
        ({"image": ("r.png", b"", "image/png")}, {}, 422, "empty_image"),
    ]
    for files, form, status, error in cases:
        reply = client.post("/v1/readings", files=files, data=form)
        assert reply.status_code == status, (form, reply.text)
        assert reply.json()["error"] == (error or "too_many_characters"), reply.text
        assert reply.json()["detail"]
    assert count(Reading) == 0
    missing = client.post("/v1/readings/999/correction", json={"text": "A"})
    assert missing.status_code == 404 and missing.json()["error"] == "reading_not_found"
    assert client.get("/v1/readings/0").status_code == 422


# --- Corrections by boxes ---------------------------------------------------------------------

# A "1", a "7" and an "L" with gaps between them, white ink on black as the page's wide board
# draws them (1000x250, an 18 px pen): the bundled model reads the "7" and the "L" surely.
BOARD_STROKES = [
    [(150, 40), (150, 210)],
    [(330, 40), (480, 40), (390, 210)],
    [(620, 40), (620, 210), (760, 210)],
]
GAP_BEFORE_L = 550  # a column of the board between the "7" and the "L"


def board_png(strokes: list[list[tuple[int, int]]] = BOARD_STROKES) -> bytes:
    board = np.zeros((250, 1000), np.uint8)
    for stroke in strokes:
        for a, b in itertools.pairwise(stroke):
            cv2.line(board, a, b, 255, 18, cv2.LINE_AA)
    return row_png(board)


def correct_boxes(client: TestClient, reading: dict, boxes: list[tuple[list[int], str]]) -> Any:
    characters = [{"box": box, "label": label} for box, label in boxes]
    return client.post(f"/v1/readings/{reading['id']}/correction", json={"characters": characters})


def union(*boxes: list[int]) -> list[int]:
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, bottom = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return [left, top, right - left, bottom - top]


def as_read(character: dict) -> tuple[list[int], str]:
    return character["box"], character["label"]


def reads_as(client: TestClient, sample_id: int) -> str:
    image = client.get(f"/v1/samples/{sample_id}/image").content
    return client.post("/v1/predictions", files={"image": ("c.png", image)}).json()["label"]


def assert_nothing_stored(client: TestClient, reading: dict) -> None:
    assert count(Sample) == 0
    assert client.get(f"/v1/readings/{reading['id']}").json()["corrected_text"] is None


def test_a_box_over_two_characters_is_split_and_both_are_stored(client: TestClient) -> None:
    # Told the row has two characters, the reader gives the "7" and the "L" one box: the
    # mistake a touching "AB1" read as one character makes.
    reading = read(client, board_png(), expected_length=2)
    first, both = reading["characters"]
    x, y, w, h = both["box"]
    assert x < GAP_BEFORE_L < x + w and w > reading["max_character_width"]
    left, right = [x, y, GAP_BEFORE_L - x, h], [GAP_BEFORE_L, y, x + w - GAP_BEFORE_L, h]
    reply = correct_boxes(client, reading, [as_read(first), (left, "7"), (right, "L")])
    assert reply.status_code == 200, reply.text
    result = reply.json()
    # The first box, as read, is no news; each half is a new box, stored with its label.
    assert [(c["index"], c["read"], c["label"]) for c in result["corrected"]] == [
        (1, None, "7"),
        (2, None, "L"),
    ]
    assert result["reading"]["corrected_text"] == first["label"] + "7L"
    with get_sessionmaker()() as session:
        stored = session.scalars(select(Sample).order_by(Sample.id)).all()
        assert [(s.label, s.source, s.reading_id) for s in stored] == [
            ("7", "reading", reading["id"]),
            ("L", "reading", reading["id"]),
        ]
    # Each sample's picture is its half of the box, cut as the reader cuts: read as its label.
    assert [reads_as(client, c["sample"]["id"]) for c in result["corrected"]] == ["7", "L"]
    again = correct_boxes(client, reading, [as_read(first), (left, "7"), (right, "L")])
    assert again.status_code == 409 and again.json()["error"] == "already_corrected"
    assert count(Sample) == 2


def test_two_boxes_of_one_character_are_merged(client: TestClient) -> None:
    # Told the row has four characters, the reader cuts the "7" in two.
    reading = read(client, board_png(), expected_length=4)
    first, a, b, last = reading["characters"]
    merged = union(a["box"], b["box"])
    reply = correct_boxes(client, reading, [as_read(first), (merged, "7"), as_read(last)])
    assert reply.status_code == 200, reply.text
    [corrected] = reply.json()["corrected"]
    assert (corrected["index"], corrected["read"], corrected["label"]) == (1, None, "7")
    assert reads_as(client, corrected["sample"]["id"]) == "7"
    assert count(Sample) == 1


def test_a_box_left_out_is_skipped(client: TestClient) -> None:
    reading = read(client, board_png())
    _, seven, ell = reading["characters"]
    assert (seven["label"], ell["label"]) == ("7", "L")
    # The first mark is no character; the "L" is relabelled: only that one is stored.
    reply = correct_boxes(client, reading, [as_read(seven), (ell["box"], "E")])
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["reading"]["corrected_text"] == "7E"
    [corrected] = result["corrected"]
    assert (corrected["index"], corrected["read"], corrected["label"]) == (1, "L", "E")
    with get_sessionmaker()() as session:
        [sample] = session.scalars(select(Sample)).all()
        # The stored picture is the crop the reading made, as a text correction stores it.
        assert sample.image == base64.b64decode(
            session.get(Reading, reading["id"]).crops[2]  # type: ignore[union-attr]
        )


def test_a_box_holding_several_characters_is_refused(client: TestClient) -> None:
    reading = read(client, board_png(), expected_length=2)
    first, both = reading["characters"]
    reply = correct_boxes(client, reading, [as_read(first), (both["box"], "7")])
    assert reply.status_code == 422, reply.text
    error = reply.json()
    assert error["error"] == "box_holds_several_characters" and error["index"] == 1
    assert error["max_width"] == reading["max_character_width"]
    assert "split it" in error["detail"] and f"{error['max_width']} px" in error["detail"]
    # The rule is the reading's: 1.28 times the median height of the characters read.
    heights = [c["box"][3] for c in reading["characters"]]
    assert reading["max_character_width"] == int(1.28 * float(np.median(heights)))
    assert_nothing_stored(client, reading)


@pytest.mark.parametrize(
    ("box", "error"),
    [
        ([900, 30, 200, 150], "box_outside_picture"),
        ([-5, 30, 100, 150], "box_outside_picture"),
        ([820, 30, 0, 150], "empty_box"),
        ([820, 30, 150, 190], "no_ink"),  # right of the "L": paper only
    ],
)
def test_a_box_that_is_no_character_is_refused_and_nothing_is_stored(
    client: TestClient, box: list[int], error: str
) -> None:
    reading = read(client, board_png())
    first, seven, ell = reading["characters"]
    boxes = [as_read(first), (seven["box"], "4"), as_read(ell), (box, "1")]
    reply = correct_boxes(client, reading, boxes)
    assert (reply.status_code, reply.json()["error"]) == (422, error), reply.text
    assert reply.json()["index"] == 3 and "characters[3]" in reply.json()["detail"]
    assert_nothing_stored(client, reading)


def test_boxes_that_overlap_or_are_out_of_order_are_refused(client: TestClient) -> None:
    reading = read(client, board_png())
    first, seven, _ = reading["characters"]
    x, y, w, h = seven["box"]
    cases = [
        ([as_read(first), (seven["box"], "7"), ([x + 5, y, w, h], "7")], "boxes_overlap"),
        ([as_read(seven), as_read(first)], "boxes_out_of_order"),
        ([as_read(first), (seven["box"], "€")], "invalid_label"),
        ([as_read(first), (seven["box"], "77")], "invalid_label"),
    ]
    for boxes, error in cases:
        reply = correct_boxes(client, reading, boxes)
        assert (reply.status_code, reply.json()["error"]) == (422, error), reply.text
    both = client.post(
        f"/v1/readings/{reading['id']}/correction",
        json={"text": "17L", "characters": [{"box": seven["box"], "label": "7"}]},
    )
    neither = client.post(f"/v1/readings/{reading['id']}/correction", json={})
    for reply in (both, neither):
        assert (reply.status_code, reply.json()["error"]) == (422, "invalid_request")
        assert "exactly one" in reply.json()["detail"]
    assert_nothing_stored(client, reading)


def test_a_correction_refused_at_its_last_character_stores_nothing(client: TestClient) -> None:
    """One unit of work per request: the characters before the one refused were written in the
    request's transaction, and go with it."""
    row = make_rows(1, kind="canvas", seed=13)[0]
    body = read(client, row_png(row), expected_length=len(row.text))
    read_text = body["text"].replace(" ", "")
    # Every character corrected: each read one replaced by another label.
    right_text = "".join("7" if c != "7" else "4" for c in read_text)
    with get_sessionmaker()() as session:
        reading = session.get(Reading, body["id"])
        assert reading is not None
        last_crop = base64.b64decode(reading.crops[-1])
    # The last character's picture is stored already, under a third label: a label conflict.
    other = next(c for c in "XYZ" if c != right_text[-1])
    stored = client.post(
        "/v1/samples", files={"image": ("c.png", last_crop, "image/png")}, data={"label": other}
    )
    assert stored.status_code == 201, stored.text

    reply = client.post(f"/v1/readings/{body['id']}/correction", json={"text": right_text})
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"] == "label_conflict"
    assert count(Sample) == 1  # only the picture stored before
    assert client.get(f"/v1/readings/{body['id']}").json()["corrected_text"] is None
    # The reading is still open: the right correction applies.
    fixed = right_text[:-1] + other
    reply = client.post(f"/v1/readings/{body['id']}/correction", json={"text": fixed})
    assert reply.status_code == 200, reply.text
    assert count(Sample) == 1 + len(read_text) - 1  # the last one was stored already
