"""/v1/readings: what the serving model reads in a picture of a row of characters, and users'
corrections of it (each character read wrong becomes a sample)."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from api.deps import (
    LabelSetDep,
    PredictorDep,
    RowId,
    ServingModelDep,
    SessionDep,
    SettingsDep,
    allowed_labels,
    get_or_404,
    read_image,
    sent_once,
)
from api.errors import NO_MODEL, ApiError
from api.routers.samples import to_out as sample_out
from api.schemas import (
    CandidateOut,
    CorrectedCharacterOut,
    CorrectionIn,
    CorrectionOut,
    ReadCharacterOut,
    ReadingOut,
)
from core.segmentation import ROW_SIDE
from db.models import Reading
from domain import readings
from domain.reader import ReadingError, read_row

router = APIRouter(prefix="/v1/readings", tags=["readings"])


def to_out(reading: Reading) -> ReadingOut:
    characters = [
        ReadCharacterOut(
            index=index,
            box=c["box"],
            label=c["label"],
            confidence=c["confidence"],
            top=[CandidateOut(**candidate) for candidate in c["top"]],
            low_confidence=c["low_confidence"],
            space_before=c["space_before"],
        )
        for index, c in enumerate(reading.characters)
    ]
    return ReadingOut(
        id=reading.id,
        text=reading.text,
        confidence=reading.confidence,
        low_confidence=any(c.low_confidence for c in characters),
        characters=characters,
        width=reading.width,
        height=reading.height,
        allowed_labels=reading.allowed_labels,
        expected_length=reading.expected_length,
        model_version=reading.model_version,
        corrected_text=reading.corrected_text,
        created_at=reading.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=NO_MODEL,
    dependencies=[sent_once("image", "labels", "expected_length")],
)
def read(
    image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or GIF of one row")],
    session: SessionDep,
    settings: SettingsDep,
    predictor: PredictorDep,
    labels: Annotated[
        str | None,
        Form(max_length=128, description="Only these characters, e.g. 0123456789 for a postcode"),
    ] = None,
    expected_length: Annotated[
        int | None, Form(ge=1, le=256, description="How many characters the row holds")
    ] = None,
) -> ReadingOut:
    """Read a row of handwritten characters (a form field, a code, a short word): each character
    with its box, label, confidence and top 5, the text left to right, spaces at wide gaps. The
    reading is stored, so that it can be corrected (`POST /v1/readings/{id}/correction`)."""
    model = predictor.model
    allowed = allowed_labels(labels, model.labels)
    if expected_length is not None and expected_length > settings.max_reading_characters:
        raise ApiError(
            422,
            "too_many_characters",
            f"expected_length is {expected_length}; at most "
            f"{settings.max_reading_characters} characters are read in one row",
            max_characters=settings.max_reading_characters,
        )
    data, decoded = read_image(image, settings, side=ROW_SIDE)
    try:
        row = read_row(
            model,
            decoded.image,
            labels=allowed,
            expected_length=expected_length,
            threshold=settings.low_confidence_threshold,
            max_characters=settings.max_reading_characters,
            scale=decoded.width / decoded.image.shape[1],
        )
    except ReadingError as exc:
        raise ApiError(
            422, exc.code, exc.message, max_characters=settings.max_reading_characters
        ) from exc
    stored = readings.store(session, data, decoded, model, row, allowed, expected_length)
    return to_out(stored)


@router.get("/{reading_id}", responses=NO_MODEL)
def get_reading(reading_id: RowId, session: SessionDep) -> ReadingOut:
    return to_out(get_or_404(session, Reading, reading_id, "reading_not_found", "reading"))


@router.post("/{reading_id}/correction", responses=NO_MODEL)
def correct_reading(
    reading_id: RowId,
    correction: CorrectionIn,
    session: SessionDep,
    settings: SettingsDep,
    label_set: LabelSetDep,
    model: ServingModelDep,
) -> CorrectionOut:
    """Give the right text of a reading, one character per character read (spaces ignored).
    Each character read wrong is stored as a sample (`source: reading`), its picture cut from
    the row, and counts toward the next retrain like any upload. Once per reading."""
    reading = get_or_404(session, Reading, reading_id, "reading_not_found", "reading")
    try:
        corrected = readings.correct(session, reading, correction.text, label_set, settings, model)
    except readings.CorrectionError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    return CorrectionOut(
        reading=to_out(reading),
        corrected=[
            CorrectedCharacterOut(
                index=c.index, read=c.read, label=c.label, sample=sample_out(c.upload.sample)
            )
            for c in corrected
        ],
    )
