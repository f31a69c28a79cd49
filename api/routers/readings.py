"""/v1/readings: what the serving model reads in a picture of a row of characters, and users'
corrections of it (each character read wrong becomes a sample)."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from api.auth import UploaderDep
from api.deps import (
    LabelSetDep,
    PredictorDep,
    RowId,
    ServingPredictorDep,
    SessionDep,
    SettingsDep,
    allowed_labels,
    decode_upload,
    get_or_404,
    read_upload,
    sent_once,
)
from api.errors import NO_MODEL, ApiError, coded_error, image_error
from api.ratelimit import MeterDep
from api.routers import API_PREFIX
from api.schemas import (
    CandidateOut,
    CorrectedCharacterOut,
    CorrectionIn,
    CorrectionOut,
    ReadCharacterOut,
    ReadingOut,
    sample_out,
)
from core.config import Settings
from core.images import DecodedImage, ImageError
from core.segmentation import ROW_SIDE
from db.models import Reading
from domain import readings, row_boxes, samples
from domain.evidence import evidence_rules
from domain.keys import Client
from domain.predictor import Predictor
from domain.reader import ReadingError, RowReading, read_row

router = APIRouter(prefix=f"{API_PREFIX}/readings", tags=["readings"])


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
        max_character_width=row_boxes.several_characters_width(reading),
        created_at=reading.created_at,
    )


def read_picture(
    data: bytes,
    predictor: Predictor,
    allowed: str | None,
    expected_length: int | None,
    settings: Settings,
) -> tuple[DecodedImage, RowReading, list[str]]:
    """A row's CPU work, done in the pool: decode, read, each character's picture as a PNG."""
    decoded = decode_upload(data, settings, side=ROW_SIDE)
    try:
        row = read_row(
            predictor,
            decoded.image,
            labels=allowed,
            expected_length=expected_length,
            max_characters=settings.max_reading_characters,
            scale=decoded.width / decoded.image.shape[1],
        )
    except ReadingError as exc:
        raise coded_error(exc, max_characters=settings.max_reading_characters) from exc
    return decoded, row, readings.crops_json(row)


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
    meter: MeterDep,
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
    data = read_upload(image, settings)
    decoded, row, crops = meter.call(
        read_picture, data, predictor, allowed, expected_length, settings
    )
    stored = readings.store(session, data, decoded, model, row, crops, allowed, expected_length)
    meter.stored_bytes += len(data) + sum(len(crop) for crop in crops)
    return to_out(stored)


@router.get("/{reading_id}", responses=NO_MODEL)
def get_reading(reading_id: RowId, session: SessionDep) -> ReadingOut:
    return to_out(get_or_404(session, Reading, reading_id, "reading_not_found", "reading"))


def examined_fixes(
    fixes: list[readings.CharacterFix],
    row: bytes | None,
    predictor: Predictor | None,
    client: Client,
    settings: Settings,
) -> list[tuple[readings.CharacterFix, samples.Picture]]:
    """The corrected characters' CPU work, done in the pool, as for any upload: the pictures of
    the boxes the correction made cut from the row (`row`: the reading's picture) first."""
    if row is not None and any(fix.crop is None for fix in fixes):
        decoded = decode_upload(row, settings, side=ROW_SIDE)  # as the reader decoded it
        scale = decoded.width / decoded.image.shape[1]
        fixes = row_boxes.cut_crops(fixes, decoded.image, scale)
    rules = None if client.trusted else evidence_rules(settings)
    changed = []
    for fix in fixes:
        assert fix.crop is not None
        decoded = decode_upload(fix.crop, settings)
        try:
            labels = (fix.label, fix.submitted)
            picture = samples.examine(fix.crop, decoded, labels, predictor, rules)
        except ImageError as exc:  # a box without ink: nothing to learn from
            error = image_error(exc, settings)
            error.context["index"] = fix.index
            raise error from exc
        changed.append((fix, picture))
    return changed


@router.post("/{reading_id}/correction", responses=NO_MODEL)
def correct_reading(
    reading_id: RowId,
    correction: CorrectionIn,
    session: SessionDep,
    settings: SettingsDep,
    label_set: LabelSetDep,
    predictor: ServingPredictorDep,
    client: UploaderDep,
    meter: MeterDep,
) -> CorrectionOut:
    """Correct a reading, in one of two ways:

    - `text`: the right text, one character per character read (spaces ignored);
    - `characters`: the row's characters as boxes, left to right, each with its label, where
      the boxes read were wrong: a box over two touching characters split in two, two boxes of
      one character merged, a box that is no character left out. A new box's picture is cut
      from the stored row as the reader cut the others. A box wider than the reading's
      `max_character_width` (1.28 times the median height of its characters) likely holds
      several characters and is refused (422 `box_holds_several_characters`): split it.

    Each character read wrong, and each new box, is stored as a sample (`source: reading`) and
    counts toward the next retrain like any upload. Once per reading, all or nothing: a box or
    label that does not fit is refused with a 422 naming it (`index`) and nothing is stored;
    of concurrent corrections one applies, the others get 409 `already_corrected`."""
    reading = get_or_404(session, Reading, reading_id, "reading_not_found", "reading")
    try:
        if correction.characters is not None:
            boxes = [(c.box, c.label) for c in correction.characters]
            text, fixes = row_boxes.box_fixes(
                reading, boxes, label_set, settings.max_reading_characters
            )
            row = reading.image
        else:
            text, row = correction.text or "", None
            fixes = readings.fixes(reading, text, label_set)
        changed = meter.call(examined_fixes, fixes, row, predictor, client, settings)
        corrected = readings.correct(
            session, reading, text, changed, client, settings.retrain_threshold
        )
    except readings.CorrectionError as exc:
        raise coded_error(exc) from exc
    meter.stored_bytes += sum(len(fix.crop or b"") for fix, _ in changed)
    return CorrectionOut(
        reading=to_out(reading),
        corrected=[
            CorrectedCharacterOut(
                index=c.index,
                read=c.read,
                label=c.label,
                sample=sample_out(c.upload.sample, client),
            )
            for c in corrected
        ],
    )
