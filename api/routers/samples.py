"""/v1/samples: labelled images people upload. Stored in the database, original bytes kept."""

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Response, UploadFile, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.deps import (
    BIGINT_MAX,
    AdminDep,
    LabelSetDep,
    RowId,
    SessionDep,
    SettingsDep,
    get_or_404,
    sent_once,
)
from api.errors import ApiError
from api.queue import enqueue_retrain_check
from api.schemas import ErrorOut, SampleOut, SamplePage, SampleStats
from core.images import DecodedImage, ImageError, accepted_types, decode_image
from core.labels import LabelSet, UnknownLabelError
from db.models import Sample, SampleSource
from db.queries import new_training_samples

router = APIRouter(prefix="/v1/samples", tags=["samples"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 422)
} | {503: {"model": ErrorOut, "description": "The database is not reachable; retry shortly"}}

IMAGE_STATUS = {
    "empty_image": 422,
    "image_too_large": 413,
    "image_too_many_pixels": 413,
    "unsupported_image": 415,
    "undecodable_image": 422,
}


def is_holdout(sha256: str) -> bool:
    """About 10% of samples are kept for evaluation; the hash decides, so it never changes."""
    return int(sha256[:8], 16) % 10 == 0


def to_out(sample: Sample) -> SampleOut:
    return SampleOut(
        id=sample.id,
        label=sample.label,
        submitted_label=sample.submitted_label,
        label_merged=sample.label != sample.submitted_label,
        sha256=sample.sha256,
        width=sample.width,
        height=sample.height,
        content_type=sample.content_type,
        source=sample.source,
        holdout=sample.holdout,
        created_at=sample.created_at,
    )


def match_label(label: str, label_set: LabelSet) -> tuple[str, bool]:
    try:
        match = label_set.match(label)
    except UnknownLabelError as exc:
        raise ApiError(
            422,
            "invalid_label",
            f"{exc}; allowed labels are {label_set.characters!r}",
            allowed=label_set.classes,
        ) from exc
    return match.label, match.merged


def read_image(image: UploadFile, max_bytes: int, max_pixels: int) -> tuple[bytes, DecodedImage]:
    # Reading one byte past the limit tells "too large" from "exactly at the limit".
    data = image.file.read(max_bytes + 1)
    return data, check_image(data, max_bytes, max_pixels)


def check_image(data: bytes, max_bytes: int, max_pixels: int) -> DecodedImage:
    """The decoded image, or the 4xx ApiError that says what is wrong with it."""
    try:
        return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except ImageError as exc:
        raise ApiError(
            IMAGE_STATUS[exc.code],
            exc.code,
            exc.message,
            allowed_types=accepted_types(),
            max_bytes=max_bytes,
            max_pixels=max_pixels,
        ) from exc


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[sent_once("image", "label", "source")],
    responses={200: {"model": SampleOut, "description": "Already stored with this label"}} | ERRORS,
)
def create_sample(
    image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or GIF")],
    label: Annotated[str, Form(description="One character of the label set", max_length=64)],
    session: SessionDep,
    settings: SettingsDep,
    label_set: LabelSetDep,
    response: Response,
    background: BackgroundTasks,
    source: Annotated[SampleSource, Form()] = SampleSource.upload,
) -> SampleOut:
    """Store a labelled image. The same bytes with the same label again return the stored one."""
    stored_label, _ = match_label(label, label_set)
    data, decoded = read_image(image, settings.max_upload_bytes, settings.max_image_pixels)

    existing = session.scalar(select(Sample).where(Sample.sha256 == decoded.sha256))
    if existing is None:
        sample = Sample(
            sha256=decoded.sha256,
            image=data,
            content_type=decoded.content_type,
            width=decoded.width,
            height=decoded.height,
            label=stored_label,
            submitted_label=label,
            source=source.value,
            holdout=is_holdout(decoded.sha256),
        )
        session.add(sample)
        try:
            session.commit()
        except IntegrityError:
            # Another request stored the same bytes between our read and our insert.
            session.rollback()
            existing = session.scalar(select(Sample).where(Sample.sha256 == decoded.sha256))
            if existing is None:
                raise
        else:
            background.add_task(enqueue_retrain_check)
            return to_out(sample)

    if existing.label != stored_label:
        raise ApiError(
            409,
            "label_conflict",
            f"this image is already stored with label {existing.label!r}",
            stored_label=existing.label,
            sample_id=existing.id,
        )
    response.status_code = status.HTTP_200_OK
    return to_out(existing)


def encode_cursor(sample_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{sample_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind != "id":
            raise ValueError(kind)
        sample_id = int(value)
        if not 0 < sample_id <= BIGINT_MAX:  # a forged id Postgres would refuse with a 500
            raise ValueError(value)
        return sample_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned") from exc


@router.get("", responses=ERRORS)
def list_samples(
    session: SessionDep,
    label_set: LabelSetDep,
    label: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SamplePage:
    """Samples, newest first. Follow `next_cursor` for older ones."""
    query = select(Sample).order_by(Sample.id.desc()).limit(limit + 1)
    if label is not None:
        query = query.where(Sample.label == match_label(label, label_set)[0])
    if cursor is not None:
        query = query.where(Sample.id < decode_cursor(cursor))
    rows = list(session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return SamplePage(items=[to_out(s) for s in rows[:limit]], next_cursor=next_cursor)


@router.get("/stats", responses=ERRORS)
def sample_stats(session: SessionDep, settings: SettingsDep) -> SampleStats:
    """Counts per label, training/holdout split, and progress toward the next retrain."""
    by_label = dict(
        session.execute(select(Sample.label, func.count()).group_by(Sample.label)).all()
    )
    holdout = session.scalar(select(func.count()).where(Sample.holdout.is_(True))) or 0
    total = sum(by_label.values())
    return SampleStats(
        total=total,
        training=total - holdout,
        holdout=holdout,
        by_label=dict(sorted(by_label.items())),
        new_since_last_training_run=new_training_samples(session),
        retrain_threshold=settings.retrain_threshold,
    )


def get_sample_or_404(session: SessionDep, sample_id: int) -> Sample:
    return get_or_404(session, Sample, sample_id, "sample_not_found", "sample with id")


@router.get("/{sample_id}", responses=ERRORS)
def get_sample(sample_id: RowId, session: SessionDep) -> SampleOut:
    return to_out(get_sample_or_404(session, sample_id))


@router.get(
    "/{sample_id}/image",
    response_class=Response,
    responses={200: {"content": {t: {} for t in accepted_types()}}} | ERRORS,
)
def get_sample_image(sample_id: RowId, session: SessionDep) -> Response:
    """The original bytes, with the content type found by decoding them at upload."""
    sample = get_sample_or_404(session, sample_id)
    return Response(
        content=sample.image,
        media_type=sample.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'inline; filename="sample-{sample.id}"',
            "Cache-Control": "private, max-age=86400, immutable",
            "ETag": f'"{sample.sha256}"',
        },
    )


@router.delete(
    "/{sample_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[AdminDep],
    responses=ERRORS,
)
def delete_sample(sample_id: RowId, session: SessionDep) -> Response:
    """Admin: remove a sample (for example one with a wrong label)."""
    session.delete(get_sample_or_404(session, sample_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
