"""Labelled samples people upload: storing them, finding them, and what training sees of them.

About one sample in ten is kept for evaluation (judging candidates) instead of training; which
ones is decided once, at insert, and never changes. The decision is a keyed hash of the decoded
pixels: re-encodings of one picture land on the same side, and nobody without the key can tell
in advance which side a picture lands on. Only trusted evaluation samples (confirmed by an
admin, or from a trusted source) judge candidates: an uploader alone never decides a promotion.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from core.config import Settings, get_settings
from core.images import DecodedImage, ImageError, decode_image
from core.labels import LabelSet
from core.preprocessing import grayscale, preprocess_image
from db.models import Sample, SampleSource, SampleStatus, ServiceKey, cleared_samples
from domain import runs

if TYPE_CHECKING:
    from domain.predictor import LoadedModel

EVALUATION_KEY_NAME = "evaluation"
FINGERPRINT_SIDE = 32  # pixels a side of the picture the decision hashes
FINGERPRINT_LEVELS = 16  # grey levels kept: re-encoding noise below 1/16 changes nothing


class LabelConflict(Exception):
    """The same image is already stored with another label."""

    def __init__(self, existing: Sample) -> None:
        super().__init__(f"this image is already stored with label {existing.label!r}")
        self.existing = existing


def pixel_fingerprint(image: np.ndarray) -> bytes:
    """The decoded picture reduced to what re-encoding cannot change: 32x32 by area averaging,
    grey (alpha composited), 16 levels. Metadata, compression and container are gone. Reduced
    first, so that an upload pays for a 32x32 grey conversion, not a full-size one."""
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    small = _area_reduce(image, FINGERPRINT_SIDE)
    if image.ndim == 3 and small.ndim == 2:  # one channel: OpenCV drops the axis
        small = small[:, :, np.newaxis]
    grey = grayscale(small)
    if grey.dtype == np.uint8:
        unit = grey.astype(np.float32) / 255
    elif grey.dtype == np.uint16:
        unit = grey.astype(np.float32) / 65535
    else:
        unit = np.clip(grey.astype(np.float32), 0.0, 1.0)
    levels = np.clip(np.floor(unit * FINGERPRINT_LEVELS), 0, FINGERPRINT_LEVELS - 1)
    return levels.astype(np.uint8).tobytes()


def _area_reduce(image: np.ndarray, side: int) -> np.ndarray:
    """side x side by area averaging, in two steps: a whole factor first (OpenCV's fast path;
    one step from 280x280 to 32x32 costs twice as much), then the rest."""
    height, width = image.shape[:2]
    factor = max(1, min(height, width) // side)
    if factor > 1:
        whole = image[: height // factor * factor, : width // factor * factor]
        image = cv2.resize(whole, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def is_evaluation_sample(image: np.ndarray, key: bytes) -> bool:
    """About 10% of samples are kept for evaluation: a keyed hash (HMAC-SHA256) of the pixel
    fingerprint decides, so it never changes and cannot be steered without the key."""
    digest = hmac.new(key, pixel_fingerprint(image), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % 10 == 0


_keys: dict[URL, bytes] = {}  # per database: read once per process


def evaluation_key(session: Session) -> bytes:
    """EVALUATION_KEY if set; otherwise the key generated once and stored in `service_keys`
    (the first process to need it inserts it, every later one reads that one)."""
    configured = get_settings().evaluation_key
    if configured:
        return configured.encode()
    database = session.get_bind().url
    if database not in _keys:
        _keys[database] = _stored_key(session)
    return _keys[database]


def _stored_key(session: Session) -> bytes:
    session.execute(
        _insert(session, ServiceKey)
        .values(name=EVALUATION_KEY_NAME, secret=secrets.token_bytes(32))
        .on_conflict_do_nothing(index_elements=["name"])
    )
    key = session.scalar(select(ServiceKey.secret).where(ServiceKey.name == EVALUATION_KEY_NAME))
    session.commit()
    assert key is not None
    return bytes(key)


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (Postgres here, SQLite for the local run)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def trusted(trusted_sources: Iterable[str]) -> ColumnElement[bool]:
    """A sample whose label an admin vouches for: confirmed, or from a trusted source."""
    return or_(Sample.confirmed_at.is_not(None), Sample.source.in_(list(trusted_sources)))


@dataclass(frozen=True)
class SuspectRule:
    """A sample is suspect when the serving model gives its label less than
    `max_label_probability` while giving another label at least `min_other_probability`."""

    max_label_probability: float
    min_other_probability: float


def suspect_rule(settings: Settings) -> SuspectRule:
    return SuspectRule(
        settings.suspect_max_label_probability, settings.suspect_min_other_probability
    )


@dataclass(frozen=True)
class ModelOpinion:
    """What the serving model read in a sample when it was stored."""

    label: str
    probability: float
    suspect: bool


def model_opinion(
    model: "LoadedModel", image: np.ndarray, label: str, rule: SuspectRule | None
) -> ModelOpinion | None:
    """What the serving model reads in a sample, through the serving preprocessing; suspect by
    `rule` (None: a trusted source, never suspect). None when the model does not know the
    label (it was trained on another label set)."""
    if label not in model.labels.characters:
        return None
    probabilities = model.probabilities(preprocess_image(image)[np.newaxis, :, :, np.newaxis])
    return opinion_of(probabilities[0], model.labels.characters, label, rule)


def opinion_of(
    probabilities: np.ndarray, characters: str, label: str, rule: SuspectRule | None
) -> ModelOpinion:
    """A model's opinion of one sample from its class probabilities (`characters` order)."""
    top = int(probabilities.argmax())
    suspect = (
        rule is not None
        and characters[top] != label
        and probabilities[characters.index(label)] < rule.max_label_probability
        and probabilities[top] >= rule.min_other_probability
    )
    return ModelOpinion(characters[top], float(probabilities[top]), bool(suspect))


def status_of(sample: Sample) -> SampleStatus:
    if sample.confirmed_at is not None:
        return SampleStatus.confirmed
    return SampleStatus.suspect if sample.suspect else SampleStatus.accepted


@dataclass(frozen=True)
class Upload:
    sample: Sample
    created: bool  # False: the same bytes were stored already, with this label
    retrain_due: bool  # it brought the new training samples to the retrain threshold


def store(
    session: Session,
    data: bytes,
    decoded: DecodedImage,
    label: str,
    submitted_label: str,
    source: SampleSource,
    retrain_threshold: int | None = None,
    opinion: ModelOpinion | None = None,
    reading_id: int | None = None,
) -> Upload:
    """Store an uploaded image with its label, and say whether a retrain is now due.

    The same bytes with the same label again give the stored sample; with another label,
    LabelConflict. Uploads are the busiest write, so a new picture costs one transaction of
    two Core statements: INSERT .. ON CONFLICT DO NOTHING (which also settles two requests
    racing with the same bytes) and, for a training sample, the threshold check (domain.runs).
    A suspect sample (by the serving model's `opinion`) never counts toward the threshold.
    """
    values = {
        "sha256": decoded.sha256,
        "image": data,
        "content_type": decoded.content_type,
        "width": decoded.width,
        "height": decoded.height,
        "label": label,
        "submitted_label": submitted_label,
        "source": source.value,
        "evaluation": is_evaluation_sample(decoded.image, evaluation_key(session)),
        "suspect": opinion is not None and opinion.suspect,
        "model_label": opinion.label if opinion else None,
        "model_probability": opinion.probability if opinion else None,
        "reading_id": reading_id,
    }
    inserted = session.connection().execute(_insert_unless_stored(session, values)).first()
    if inserted is not None:
        due = (
            retrain_threshold is not None
            and not values["evaluation"]
            and not values["suspect"]
            and runs.is_due(session, retrain_threshold)
        )
        session.commit()
        return Upload(Sample(**values, id=inserted.id, created_at=inserted.created_at), True, due)
    existing = session.scalar(select(Sample).where(Sample.sha256 == decoded.sha256))
    session.commit()
    if existing is None:  # deleted between the two statements: store it after all
        return store(
            session,
            data,
            decoded,
            label,
            submitted_label,
            source,
            retrain_threshold,
            opinion,
            reading_id,
        )
    if existing.label != label:
        raise LabelConflict(existing)
    return Upload(existing, False, False)


def _insert_unless_stored(session: Session, values: dict[str, object]) -> ReturningInsert[Any]:
    """INSERT that does nothing where the same bytes (sha256) are stored already."""
    table = Sample.__table__
    return (
        _insert(session, table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(table.c.id, table.c.created_at)
    )


_STATUS_FILTER = {
    SampleStatus.confirmed: Sample.confirmed_at.is_not(None),
    SampleStatus.suspect: ~cleared_samples(),  # suspect and not confirmed
    SampleStatus.accepted: and_(Sample.suspect.is_(False), Sample.confirmed_at.is_(None)),
}


def page(
    session: Session,
    label: str | None,
    before_id: int | None,
    limit: int,
    status: SampleStatus | None = None,
) -> list[Sample]:
    """Up to `limit` samples, newest first, older than `before_id` when given."""
    query = select(Sample).order_by(Sample.id.desc()).limit(limit)
    if label is not None:
        query = query.where(Sample.label == label)
    if status is not None:
        query = query.where(_STATUS_FILTER[status])
    if before_id is not None:
        query = query.where(Sample.id < before_id)
    return list(session.scalars(query))


@dataclass(frozen=True)
class SampleCounts:
    by_label: dict[str, int]
    total: int
    training: int
    evaluation: int
    new_training_samples: int
    suspect: int


def counts(session: Session) -> SampleCounts:
    by_label = dict(
        session.execute(select(Sample.label, func.count()).group_by(Sample.label)).all()
    )
    evaluation = session.scalar(select(func.count()).where(Sample.evaluation.is_(True))) or 0
    total = sum(by_label.values())
    return SampleCounts(
        by_label=dict(sorted(by_label.items())),
        total=total,
        training=total - evaluation,
        evaluation=evaluation,
        new_training_samples=runs.new_training_samples(session),
        suspect=session.scalar(select(func.count()).where(_STATUS_FILTER[SampleStatus.suspect]))
        or 0,
    )


def confirm(session: Session, sample: Sample, retrain_threshold: int | None = None) -> bool:
    """An admin vouches for the sample's label; the first confirmation's time is kept. A
    suspect training sample then trains, and counts toward the threshold: whether a retrain
    is now due."""
    if sample.confirmed_at is not None:
        return False
    sample.confirmed_at = runs.now()
    session.flush()  # the threshold query below runs on the connection: it must see this
    released = sample.suspect and not sample.evaluation
    due = released and retrain_threshold is not None and runs.is_due(session, retrain_threshold)
    session.commit()
    return due


def delete(session: Session, sample: Sample) -> None:
    session.delete(sample)
    session.commit()


@dataclass(frozen=True)
class Glyphs:
    """Samples as the model sees them."""

    x: np.ndarray  # (N, 28, 28) uint8: core.preprocessing's output times 255
    y: np.ndarray  # (N,) class indices

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def stack(xs: list[np.ndarray], ys: list[int]) -> "Glyphs":
        x = np.stack(xs) if xs else np.zeros((0, 28, 28), np.uint8)
        return Glyphs(x, np.array(ys, np.int32))


def for_training(
    session: Session,
    watermark: int,
    labels: LabelSet,
    max_pixels: int,
    trusted_sources: Iterable[str] = (),
) -> tuple[Glyphs, Glyphs]:
    """(training, evaluation) samples up to the watermark, through the serving preprocessing,
    so that what is trained is what is served. The evaluation set holds only trusted
    evaluation samples; untrusted ones are in neither set, nor are unconfirmed suspects."""
    groups: dict[bool, tuple[list[np.ndarray], list[int]]] = {True: ([], []), False: ([], [])}
    rows = session.execute(
        select(Sample.image, Sample.label, Sample.evaluation)
        .where(
            Sample.id <= watermark,
            or_(Sample.evaluation.is_(False), trusted(trusted_sources)),
            or_(cleared_samples(), trusted(trusted_sources)),
        )
        .order_by(Sample.id)  # the order the training sees: the same for the same samples
    )
    for image, label, evaluation in rows:
        if label not in labels.characters:
            continue  # stored under another label set
        try:
            decoded = decode_image(image, max_bytes=len(image), max_pixels=max_pixels)
        except ImageError:
            continue  # stored before a stricter limit; never fails a run
        glyph = np.rint(preprocess_image(decoded.image) * 255).astype(np.uint8)
        groups[evaluation][0].append(glyph)
        groups[evaluation][1].append(labels.index(label))
    return Glyphs.stack(*groups[False]), Glyphs.stack(*groups[True])


def upload_copies(uploads: int, nist_images: int, share: float, max_copies: int) -> int:
    """Copies of each training sample per epoch, so that samples make about `share` of what an
    epoch sees next to `nist_images` NIST images, at most `max_copies` (no memorising a few)."""
    if uploads == 0:
        return 1
    wanted = share * nist_images / ((1 - share) * uploads)
    return int(max(1, min(max_copies, round(wanted))))
