"""Stored readings of rows, and their corrections: where a row's characters become samples.

A reading keeps the picture, what the serving model read and each character's picture (its
crop, as a PNG). A user's correction of the text stores each character read wrong as a sample
(`source=reading`, with the reading's id), through the same path as a single upload: label
hygiene, the evaluation split and the retrain threshold all apply.
"""

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from sqlalchemy.orm import Session

from core.config import Settings
from core.images import DecodedImage, decode_image
from core.labels import LabelSet
from db.models import Reading, SampleSource
from domain import runs, samples
from domain.predictor import LoadedModel
from domain.reader import ReadCharacter, RowReading


class CorrectionError(ValueError):
    """A correction that cannot apply to its reading; `code` names the problem."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


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


def store(
    session: Session,
    data: bytes,
    decoded: DecodedImage,
    model: LoadedModel,
    row: RowReading,
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
        crops=[base64.b64encode(crop_png(c.crop)).decode() for c in row.characters],
    )
    session.add(reading)
    session.commit()
    return reading


@dataclass(frozen=True)
class CorrectedCharacter:
    index: int
    read: str  # what the model read
    label: str  # what the user says it is (the stored class)
    upload: samples.Upload


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
    label_set: LabelSet,
    settings: Settings,
    model: LoadedModel | None,
) -> list[CorrectedCharacter]:
    """Apply a user's correction of a reading: each character read wrong becomes a sample.
    A reading is corrected once (a second correction: CorrectionError, 409)."""
    if reading.corrected_at is not None:
        raise CorrectionError(
            "already_corrected",
            f"reading {reading.id} was corrected already, as {reading.corrected_text!r}",
            status=409,
        )
    labels = corrected_labels(reading, text, label_set)
    trusted = SampleSource.reading in settings.trusted_sources
    rule = None if trusted else samples.suspect_rule(settings)
    corrected, due = [], False
    for index, (character, (label, submitted)) in enumerate(
        zip(reading.characters, labels, strict=True)
    ):
        if character["label"] == label:
            continue
        try:
            upload = _store_character(
                session, reading, index, (label, submitted), settings, model, rule
            )
        except samples.LabelConflict as exc:
            raise CorrectionError("label_conflict", f"character {index + 1}: {exc}", 409) from exc
        corrected.append(CorrectedCharacter(index, character["label"], label, upload))
        due = due or upload.retrain_due
    reading.corrected_text = text
    reading.corrected_at = datetime.now(UTC)
    session.commit()
    if due:
        runs.start_if_due(session, settings.retrain_threshold)
    return corrected


def _store_character(
    session: Session,
    reading: Reading,
    index: int,
    labels: tuple[str, str],
    settings: Settings,
    model: LoadedModel | None,
    rule: samples.SuspectRule | None,
) -> samples.Upload:
    """One character's crop stored as a sample; `labels`: (stored class, as the user sent it)."""
    data = base64.b64decode(reading.crops[index])
    decoded = decode_image(data, max_bytes=len(data), max_pixels=settings.max_image_pixels)
    label, submitted = labels
    opinion = samples.model_opinion(model, decoded.image, label, rule) if model else None
    return samples.store(
        session,
        data,
        decoded,
        label,
        submitted,
        SampleSource.reading,
        settings.retrain_threshold,
        opinion,
        reading.id,
    )
