"""Stored readings of rows, and their corrections: where a row's characters become samples.

A reading keeps the picture, what the serving model read and each character's picture (its
crop, as a PNG). A user's correction stores each character read wrong as a sample
(`source=reading`, with the reading's id), through the same path as a single upload: label
hygiene, the evaluation split and the retrain threshold all apply. A correction gives either
the text (one character per character read), here, or the boxes themselves (a box split, two
merged, one left out): domain/row_boxes.py.
"""

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.errors import CodedError
from core.images import DecodedImage
from core.labels import LabelSet
from db.models import Reading, SampleSource
from domain import samples
from domain.keys import Client
from domain.predictor import LoadedModel
from domain.reader import ReadCharacter, RowReading


class CorrectionError(CodedError):
    """A correction that cannot apply to its reading; `code` names the problem (the API maps
    it to an HTTP status: api/errors.py, STATUS)."""


def crop_png(crop: np.ndarray) -> bytes:
    """A character's crop (bright ink on 0, float) as a PNG of dark ink on white: a picture
    like any upload, which the one preprocessing turns into the glyph that was read."""
    paper = np.rint((1.0 - np.clip(crop, 0.0, 1.0)) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", paper)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def character_json(character: ReadCharacter) -> dict[str, Any]:
    return {
        "box": list(character.box),
        "label": character.label,
        "confidence": character.confidence,
        "top": [{"label": c.label, "probability": c.probability} for c in character.top],
        "low_confidence": character.low_confidence,
        "space_before": character.space_before,
    }


def crops_json(row: RowReading) -> list[str]:
    """Each character's picture as a base64 PNG (CPU work: the API does it in its pool)."""
    return [base64.b64encode(crop_png(c.crop)).decode() for c in row.characters]


def store(
    session: Session,
    data: bytes,
    decoded: DecodedImage,
    model: LoadedModel,
    row: RowReading,
    crops: list[str],
    allowed_labels: str | None,
    expected_length: int | None,
) -> Reading:
    reading = Reading(
        image=data,
        content_type=decoded.content_type,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        model_version=model.version,
        allowed_labels=allowed_labels,
        expected_length=expected_length,
        text=row.text,
        confidence=row.confidence,
        characters=[character_json(c) for c in row.characters],
        crops=crops,
    )
    session.add(reading)
    session.flush()  # its id, for the reply
    return reading


@dataclass(frozen=True)
class CharacterFix:
    """One character of a reading the user says was read wrong, or a box the correction made
    (`read` None): what it becomes."""

    index: int  # in the correction: its text's characters, or its boxes
    read: str | None  # what the model read in this box; None for a box the correction made
    label: str  # the stored class
    submitted: str  # as the user sent it
    crop: bytes | None  # its picture (PNG); None until cut from the row (`cut_crops`)
    box: tuple[int, int, int, int]  # x, y, width, height in the picture's own pixels


@dataclass(frozen=True)
class CorrectedCharacter:
    index: int
    read: str | None  # what the model read (None: a box the correction made)
    label: str  # what the user says it is (the stored class)
    upload: samples.Upload


def ensure_open(reading: Reading) -> None:
    if reading.corrected_at is not None:
        raise CorrectionError(
            "already_corrected",
            f"reading {reading.id} was corrected already, as {reading.corrected_text!r}",
        )


def fixes(reading: Reading, text: str, label_set: LabelSet) -> list[CharacterFix]:
    """The characters a correction changes, or CorrectionError saying why it does not fit or
    that the reading was corrected already. Nothing is stored."""
    ensure_open(reading)
    changed = []
    for index, (character, (label, submitted)) in enumerate(
        zip(reading.characters, corrected_labels(reading, text, label_set), strict=True)
    ):
        if character["label"] != label:
            crop = base64.b64decode(reading.crops[index])
            x, y, w, h = character["box"]
            read = character["label"]
            changed.append(CharacterFix(index, read, label, submitted, crop, (x, y, w, h)))
    return changed


def corrected_labels(reading: Reading, text: str, label_set: LabelSet) -> list[tuple[str, str]]:
    """The corrected text as (stored class, character as sent) per character of the reading
    (spaces ignored), or CorrectionError saying why it does not fit."""
    characters = [c for c in text if not c.isspace()]
    if len(characters) != len(reading.characters):
        raise CorrectionError(
            "length_mismatch",
            f"the reading has {len(reading.characters)} characters and the correction "
            f"{len(characters)} (spaces aside); correct each character in its place",
        )
    resolved = [(label_set.resolve(c), c) for c in characters]
    unknown = sorted({c for label, c in resolved if label is None})
    if unknown:
        raise CorrectionError(
            "invalid_label",
            f"{''.join(unknown)!r} not in the label set {label_set.characters!r}",
        )
    return [(label, c) for label, c in resolved if label is not None]


def correct(
    session: Session,
    reading: Reading,
    text: str,
    changed: list[tuple[CharacterFix, samples.Picture]],
    client: Client,
    retrain_threshold: int,
) -> list[CorrectedCharacter]:
    """Apply a user's correction: the reading is marked corrected and each character read
    wrong stored as a sample, in the caller's transaction: all or nothing (a CorrectionError
    rolls it back). Of several corrections of one reading at once, one applies; the others get
    CorrectionError `already_corrected` (409): the reading is claimed by a conditional UPDATE,
    which waits for a concurrent one to end."""
    claimed = session.execute(
        update(Reading)
        .where(Reading.id == reading.id, Reading.corrected_at.is_(None))
        .values(corrected_text=text, corrected_at=datetime.now(UTC))
    ).rowcount
    if claimed != 1:
        session.refresh(reading)  # read committed: what the correction that won wrote
        ensure_open(reading)
        raise CorrectionError("already_corrected", f"reading {reading.id} was corrected already")
    try:
        uploads = samples.accept(
            session,
            [picture for _, picture in changed],
            client,
            SampleSource.reading,
            retrain_threshold,
            reading_id=reading.id,
        )
    except samples.LabelConflict as exc:
        raise CorrectionError("label_conflict", str(exc)) from exc
    session.refresh(reading)
    return [
        CorrectedCharacter(fix.index, fix.read, fix.label, upload)
        for (fix, _), upload in zip(changed, uploads, strict=True)
    ]
