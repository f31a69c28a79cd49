"""Reading a row: a picture of several characters -> segments -> one model run -> text.

The one place a row is read: the /v1/readings route, the web page's "Read a row" mode, the
benchmark (bench/bench_readings.py) and the tests all come here. Each character goes through
the one preprocessing, as a single upload does, and all of them through one ONNX Runtime run.
"""

from dataclasses import dataclass

import numpy as np

from core.errors import CodedError
from core.preprocessing import preprocess_batch
from core.segmentation import Segment, TooManyMarks, segment_row
from domain.predictor import Candidate, Prediction, Predictor

MARKS_PER_CHARACTER = 8


class ReadingError(CodedError):
    """A row we cannot read; `code` names the problem for the API reply."""


@dataclass(frozen=True)
class ReadCharacter:
    box: tuple[int, int, int, int]  # x, y, width, height in the picture's own pixels
    label: str
    confidence: float
    top: list[Candidate]
    low_confidence: bool
    space_before: bool
    crop: np.ndarray  # float32 (H, W) in [0, 1], bright ink: the character cut from the row


@dataclass(frozen=True)
class RowReading:
    characters: list[ReadCharacter]
    # The chance that every character is right, taking them as independent: the product of
    # their (calibrated) confidences.
    confidence: float

    @property
    def text(self) -> str:
        return "".join((" " if c.space_before else "") + c.label for c in self.characters)


def read_row(
    predictor: Predictor,
    image: np.ndarray,
    *,
    max_characters: int,
    labels: str | None = None,
    expected_length: int | None = None,
    scale: float = 1.0,
) -> RowReading:
    """Read the characters of a decoded picture (OpenCV's layout), left to right.

    labels: the characters the field may hold (a subset of the model's); expected_length: how
    many there are, when the caller knows; scale: the picture's own width over the decoded
    array's (a big JPEG is decoded reduced), so boxes are in the picture's own pixels.
    Raises ReadingError when no character is found or more than `max_characters`."""

    def judge(crops: list[np.ndarray]) -> np.ndarray:
        return predictor.model.probabilities(preprocess_batch(crops), labels).max(axis=1)

    try:
        # Pieces of one character and specks merge or drop later; far more than that many
        # marks is not a row of characters.
        segments = segment_row(image, expected_length, judge, MARKS_PER_CHARACTER * max_characters)
    except TooManyMarks as exc:
        raise ReadingError(
            "too_many_characters",
            f"the image holds {exc.marks} separate marks; a row of at most {max_characters} "
            "characters has far fewer",
        ) from exc
    if not segments:
        raise ReadingError("no_characters", "no handwritten character was found in the image")
    if len(segments) > max_characters:
        raise ReadingError(
            "too_many_characters",
            f"the image holds {len(segments)} characters or pieces; at most {max_characters} "
            "are read in one row",
        )
    glyphs = preprocess_batch([s.crop for s in segments])[..., 0]
    predictions = predictor.predict_glyphs(glyphs, labels)
    characters = [
        _character(segment, prediction, scale)
        for segment, prediction in zip(segments, predictions, strict=True)
    ]
    return RowReading(characters, float(np.prod([c.confidence for c in characters])))


def _character(segment: Segment, prediction: Prediction, scale: float) -> ReadCharacter:
    return ReadCharacter(
        box=tuple(round(v * scale) for v in segment.box),  # type: ignore[arg-type]
        label=prediction.label,
        confidence=prediction.confidence,
        top=prediction.top,
        low_confidence=prediction.doubt is not None,  # the Predictor's one rule
        space_before=segment.space_before,
        crop=segment.crop,
    )
