"""/v1/samples: labelled images people upload. Stored in the database, original bytes kept."""

import base64
import binascii
import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile, status

from api.auth import ClientDep, LabellerClientDep, UploaderDep, require
from api.deps import (
    BIGINT_MAX,
    LabelSetDep,
    RowId,
    ServingPredictorDep,
    SessionDep,
    SettingsDep,
    decode_upload,
    get_or_404,
    read_upload,
    sent_once,
)
from api.errors import ERRORS, ApiError, image_error
from api.ratelimit import MeterDep
from api.routers import API_PREFIX
from api.schemas import RelabelIn, SampleOut, SamplePage, SampleStats, sample_out
from core.config import Settings
from core.images import ImageError, accepted_types
from core.labels import LabelSet, UnknownLabelError
from db.models import Role, Sample, SampleSource, SampleStatus
from domain import samples
from domain.evidence import evidence_rules
from domain.keys import Client
from domain.predictor import Predictor

router = APIRouter(prefix=f"{API_PREFIX}/samples", tags=["samples"])


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


def examined(
    data: bytes,
    labels: tuple[str, str],
    predictor: Predictor | None,
    client: Client,
    settings: Settings,
) -> samples.Picture:
    """An upload's CPU work, done in the pool: decode, the model's opinion, the fingerprint."""
    decoded = decode_upload(data, settings)
    rules = None if client.trusted else evidence_rules(settings)
    try:
        return samples.examine(data, decoded, labels, predictor, rules)
    except ImageError as exc:  # no ink: nothing to learn from
        raise image_error(exc, settings) from exc


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
    predictor: ServingPredictorDep,
    client: UploaderDep,
    meter: MeterDep,
    response: Response,
    source: Annotated[SampleSource, Form()] = SampleSource.upload,
) -> SampleOut:
    """Store a labelled image. The same picture again (the same bytes, or the same decoded
    pixels in another file) with the same label returns the stored one; with another label,
    409. The upload that brings the new training samples to RETRAIN_THRESHOLD starts a retrain.

    Every upload is compared with the NIST examples nearest to it (the serving model's
    neighbour index): one that sits deep among examples of another class, none of them with
    its label, is stored with `status: suspect` (`suspect_reason` says why) and kept out of
    training until an admin or labeller confirms or relabels it. Pictures stored with an
    admin's or a labeller's key are trusted, never suspect; `source` only says where the
    picture came from."""
    stored_label, _ = match_label(label, label_set)
    data = read_upload(image, settings)
    picture = meter.call(examined, data, (stored_label, label), predictor, client, settings)
    try:
        upload = samples.accept(session, [picture], client, source, settings.retrain_threshold)[0]
    except samples.LabelConflict as exc:
        raise ApiError(
            409,
            "label_conflict",
            str(exc),
            stored_label=exc.existing.label,
            sample_id=exc.existing.id,
        ) from exc
    if upload.created:
        meter.stored_bytes += len(data)
    else:
        response.status_code = status.HTTP_200_OK
    return sample_out(upload.sample, client)


def encode_cursor(sample_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{sample_id}".encode()).decode()


_CURSOR = re.compile(r"id:([1-9][0-9]{0,18})")


def decode_cursor(cursor: str) -> int:
    """The sample id of a cursor this API returned; exactly that form, nothing looser."""
    try:
        match = _CURSOR.fullmatch(base64.urlsafe_b64decode(cursor.encode()).decode("ascii"))
    except (ValueError, binascii.Error, UnicodeError):
        match = None
    if match is None or encode_cursor(int(match[1])) != cursor or int(match[1]) > BIGINT_MAX:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API returned")
    return int(match[1])


@router.get("", responses=ERRORS)
def list_samples(
    session: SessionDep,
    label_set: LabelSetDep,
    client: ClientDep,
    label: Annotated[str | None, Query(max_length=64)] = None,
    status: SampleStatus | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SamplePage:
    """Samples, newest first. Follow `next_cursor` for older ones. `status=suspect`: the ones
    waiting for an admin to confirm or delete them."""
    wanted = match_label(label, label_set)[0] if label is not None else None
    before = decode_cursor(cursor) if cursor is not None else None
    rows = samples.page(session, wanted, before, limit + 1, status)
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return SamplePage(items=[sample_out(s, client) for s in rows[:limit]], next_cursor=next_cursor)


@router.get("/stats", responses=ERRORS)
def sample_stats(session: SessionDep, settings: SettingsDep) -> SampleStats:
    """Counts per label, training/evaluation split, and progress toward the next retrain."""
    counts = samples.counts(session)
    return SampleStats(
        total=counts.total,
        training=counts.training,
        evaluation=counts.evaluation,
        by_label=counts.by_label,
        new_since_last_training_run=counts.new_training_samples,
        retrain_threshold=settings.retrain_threshold,
        suspect=counts.suspect,
    )


def get_sample_or_404(session: SessionDep, sample_id: int) -> Sample:
    return get_or_404(session, Sample, sample_id, "sample_not_found", "sample with id")


@router.get("/{sample_id}", responses=ERRORS)
def get_sample(sample_id: RowId, session: SessionDep, client: ClientDep) -> SampleOut:
    return sample_out(get_sample_or_404(session, sample_id), client)


@router.head("/{sample_id}/image", include_in_schema=False)
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


@router.post("/{sample_id}/confirm", responses=ERRORS)
def confirm_sample(
    sample_id: RowId, session: SessionDep, settings: SettingsDep, client: LabellerClientDep
) -> SampleOut:
    """Admin or labeller: vouch for this sample's label. A confirmed evaluation sample judges
    candidates; an untrusted unconfirmed one never does. A confirmed suspect trains, and counts
    toward RETRAIN_THRESHOLD as a new sample whatever its age (the confirmation that reaches it
    starts a retrain)."""
    sample = get_sample_or_404(session, sample_id)
    samples.confirm(session, sample, settings.retrain_threshold)
    return sample_out(sample, client)


@router.post("/{sample_id}/relabel", responses=ERRORS)
def relabel_sample(
    sample_id: RowId,
    body: RelabelIn,
    session: SessionDep,
    settings: SettingsDep,
    label_set: LabelSetDep,
    client: LabellerClientDep,
) -> SampleOut:
    """Admin or labeller: give a sample (a held one, say) its right label; that vouches for it
    (it is confirmed) and it trains under that label."""
    stored_label, _ = match_label(body.label, label_set)
    sample = get_sample_or_404(session, sample_id)
    samples.relabel(session, sample, stored_label, settings.retrain_threshold)
    return sample_out(sample, client)


@router.delete(
    "/{sample_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(require(Role.admin, Role.labeller))],
    responses=ERRORS,
)
def delete_sample(sample_id: RowId, session: SessionDep) -> Response:
    """Admin or labeller: remove a sample (for example one with a wrong label)."""
    samples.delete(session, get_sample_or_404(session, sample_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
