"""Labelled samples people upload: storing them, finding them, and what training sees of them.

About one sample in ten is kept for evaluation (judging candidates) instead of training; which
ones is decided once, at insert, and never changes. The decision is a keyed hash of the decoded
pixels: re-encodings of one picture land on the same side, and nobody without the key can tell
in advance which side a picture lands on. Only trusted evaluation samples (confirmed by an
admin, or from a trusted source) judge candidates: an uploader alone never decides a promotion.
"""

import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from core.config import get_settings
from core.images import DecodedImage, ImageError, decode_image, require_ink
from core.labels import LabelSet
from core.preprocessing import preprocess_image
from db.models import Sample, SampleSource, SampleStatus, ServiceKey
from db.session import dialect_insert, get_sessionmaker, unit_of_work
from domain import runs
from domain.clearance import cleared_samples
from domain.evidence import Evidence, EvidenceRules, weigh
from domain.keys import Client

if TYPE_CHECKING:
    from domain.predictor import Predictor

EVALUATION_KEY_NAME = "evaluation"
# The fingerprint that decides a sample's side: 8x8 cells by area averaging, 4 grey levels.
# Coarse on purpose: JPEG noise at quality 95 moves 0.3-0.5% of the testkit corpus's pictures
# across a level boundary (32x32 at 16 levels: 10.5%); bench/bench_fingerprint.py measures it.
FINGERPRINT_SIDE = 8
FINGERPRINT_LEVELS = 4
# A picture with fewer cells than this off its commonest level is mostly paper (a small
# character on a big page, a thin pen on a big canvas): its ink's box is fingerprinted instead,
# or every such picture would share one fingerprint, and so one side.
FINGERPRINT_MIN_MARKED = 3
_INK_CONTRAST = 64  # grey levels from the border's median that count as ink for that box


class LabelConflict(Exception):
    """The same image is already stored with another label."""

    def __init__(self, existing: Sample) -> None:
        super().__init__(f"this image is already stored with label {existing.label!r}")
        self.existing = existing


def pixel_fingerprint(grey: np.ndarray) -> bytes:
    """A decoded picture (8-bit grey, core.images) reduced to what re-encoding does not change:
    8x8 cells, 4 levels. Metadata, compression, container, bit depth and alpha are gone before
    this (the decoder makes 8-bit grey of them all); JPEG noise rarely crosses a level."""
    whole = _levels(_area_reduce(grey, FINGERPRINT_SIDE))
    if np.count_nonzero(whole != np.bincount(whole.ravel()).argmax()) >= FINGERPRINT_MIN_MARKED:
        return b"w" + whole.tobytes()
    box = cv2.resize(_ink_box(grey), (FINGERPRINT_SIDE,) * 2, interpolation=cv2.INTER_AREA)
    return b"b" + _levels(box).tobytes()


def _area_reduce(image: np.ndarray, side: int) -> np.ndarray:
    """side x side by area averaging, in two steps: a whole factor first (OpenCV's fast path;
    one step from 280x280 costs twice as much), then the rest."""
    height, width = image.shape[:2]
    factor = max(1, min(height, width) // side)
    if factor > 1:
        whole = image[: height // factor * factor, : width // factor * factor]
        image = cv2.resize(whole, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _levels(cells: np.ndarray) -> np.ndarray:
    return (cells.astype(np.uint16) * FINGERPRINT_LEVELS // 256).astype(np.uint8)


def _ink_box(grey: np.ndarray) -> np.ndarray:
    """The picture (at most 128 px a side) cropped to what differs from its border's median."""
    small = _reduce(grey, 128)
    border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    ink = np.abs(small.astype(np.int16) - int(np.median(border))) > _INK_CONTRAST
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return small
    return small[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _reduce(grey: np.ndarray, side: int) -> np.ndarray:
    height, width = grey.shape
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return grey
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def is_evaluation(fingerprint: bytes, key: bytes) -> bool:
    """About 10% of samples are kept for evaluation: a keyed hash (HMAC-SHA256) of the pixel
    fingerprint decides, so it never changes and cannot be steered without the key."""
    digest = hmac.new(key, fingerprint, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % 10 == 0


def is_evaluation_sample(grey: np.ndarray, key: bytes) -> bool:
    return is_evaluation(pixel_fingerprint(grey), key)


_keys: dict[URL, bytes] = {}  # per database: read once per process


def evaluation_key(session: Session) -> bytes:
    """EVALUATION_KEY if set; otherwise the key generated once and stored in `service_keys`
    (the first process to need it inserts it, every later one reads that one). Read in a
    session of its own: the caller's transaction is not committed by it."""
    configured = get_settings().evaluation_key
    if configured:
        return configured.encode()
    database = session.get_bind().url
    if database not in _keys:
        with unit_of_work() as own:
            _keys[database] = _stored_key(own)
    return _keys[database]


def cached_evaluation_key() -> bytes | None:
    """The key when this process has it already (None: read it with `evaluation_key`)."""
    configured = get_settings().evaluation_key
    if configured:
        return configured.encode()
    return _keys.get(get_sessionmaker().kw["bind"].url)


def _stored_key(session: Session) -> bytes:
    session.execute(
        dialect_insert(session, ServiceKey)
        .values(name=EVALUATION_KEY_NAME, secret=secrets.token_bytes(32))
        .on_conflict_do_nothing(index_elements=["name"])
    )
    key = session.scalar(select(ServiceKey.secret).where(ServiceKey.name == EVALUATION_KEY_NAME))
    assert key is not None
    return bytes(key)


def trusted() -> ColumnElement[bool]:
    """A sample whose label is vouched for: confirmed by an admin or labeller, or stored by an
    admin's or a labeller's key."""
    return or_(Sample.confirmed_at.is_not(None), Sample.trusted.is_(True))


@dataclass(frozen=True)
class ModelOpinion:
    """What the serving model read in a sample when it was stored, and what the NIST examples
    nearest to it say about its label (domain/evidence.py)."""

    label: str
    probability: float
    suspect: bool
    reason: str | None  # the evidence, in words (None: the model has no neighbour index)


def model_opinion(
    predictor: "Predictor", glyph: np.ndarray, label: str, rules: EvidenceRules | None
) -> ModelOpinion | None:
    """What the serving model reads in a sample's glyph (the serving preprocessing's output),
    and whether its nearest NIST examples contradict its label (`rules` None: a trusted
    uploader, never suspect). None when the model does not know the label (another label
    set)."""
    model = predictor.model
    if label not in model.labels.characters:
        return None
    index = model.index if rules is not None else None  # a trusted uploader: never weighed
    (read,) = predictor.predict_glyphs(glyph[np.newaxis], embeddings=index is not None)
    found: Evidence | None = None
    if index is not None and rules is not None and read.embedding is not None:
        found = weigh(index, read.embedding, label, rules)
    suspect = found is not None and found.contradicts
    return ModelOpinion(read.label, read.confidence, suspect, found.reason if found else None)


def status_of(sample: Sample) -> SampleStatus:
    if sample.confirmed_at is not None:
        return SampleStatus.confirmed
    return SampleStatus.suspect if sample.suspect else SampleStatus.accepted


@dataclass(frozen=True)
class Upload:
    sample: Sample
    created: bool  # False: the same picture was stored already, with this label


@dataclass(frozen=True)
class Picture:
    """A labelled picture examined and ready to store: the CPU work (decoding, the model's
    opinion, the fingerprint that decides its side) done, outside any transaction."""

    data: bytes
    sha256: str
    pixels_sha256: str
    content_type: str
    width: int
    height: int
    label: str  # the stored class
    submitted_label: str  # as the client sent it
    fingerprint: bytes  # pixel_fingerprint: which side (training or evaluation) it lands on
    opinion: ModelOpinion | None


def examine(
    data: bytes,
    decoded: DecodedImage,
    labels: tuple[str, str],
    predictor: "Predictor | None",
    rules: EvidenceRules | None,
) -> Picture:
    """`labels`: (stored class, as sent). `rules`: None for a trusted uploader (never
    suspect). A picture without ink is no sample: ImageError `no_ink`."""
    label, submitted = labels
    glyph = require_ink(preprocess_image(decoded.image))
    return Picture(
        data=data,
        sha256=decoded.sha256,
        pixels_sha256=decoded.pixels_sha256,
        content_type=decoded.content_type,
        width=decoded.width,
        height=decoded.height,
        label=label,
        submitted_label=submitted,
        fingerprint=pixel_fingerprint(decoded.image),
        opinion=model_opinion(predictor, glyph, label, rules) if predictor else None,
    )


def store(
    session: Session,
    picture: Picture,
    client: Client,
    source: SampleSource,
    reading_id: int | None = None,
) -> Upload:
    """Add a picture to the session's transaction (flushed, not committed). The same picture
    again, by its bytes or by its decoded pixels, with the same label gives the stored sample;
    with another label, LabelConflict.

    INSERT .. ON CONFLICT DO NOTHING on either unique hash settles two requests racing with one
    picture: one row is stored, the other request finds it."""
    trusted_uploader = client.trusted
    opinion = picture.opinion
    values = {
        "sha256": picture.sha256,
        "pixels_sha256": picture.pixels_sha256,
        "image": picture.data,
        "content_type": picture.content_type,
        "width": picture.width,
        "height": picture.height,
        "label": picture.label,
        "submitted_label": picture.submitted_label,
        "source": source.value,
        "evaluation": is_evaluation(picture.fingerprint, evaluation_key(session)),
        "suspect": opinion is not None and opinion.suspect and not trusted_uploader,
        "model_label": opinion.label if opinion else None,
        "model_probability": opinion.probability if opinion else None,
        "suspect_reason": opinion.reason if opinion else None,
        "reading_id": reading_id,
        "api_key_id": client.key_id,
        "uploader": client.uploader,
        "trusted": trusted_uploader,
    }
    inserted = session.connection().execute(_insert_unless_stored(session, values)).first()
    if inserted is not None:
        return Upload(Sample(**values, id=inserted.id, created_at=inserted.created_at), True)
    existing = session.scalar(
        select(Sample).where(
            or_(Sample.sha256 == picture.sha256, Sample.pixels_sha256 == picture.pixels_sha256)
        )
    )
    if existing is None:  # deleted between the two statements: store it after all
        return store(session, picture, client, source, reading_id)
    if existing.label != picture.label:
        raise LabelConflict(existing)
    return Upload(existing, False)


def accept(
    session: Session,
    pictures: list[Picture],
    client: Client,
    source: SampleSource,
    retrain_threshold: int,
    reading_id: int | None = None,
) -> list[Upload]:
    """The one entry for new labelled pictures (an upload, a teaching, a reading's
    correction): stored in the caller's transaction, all or none (LabelConflict: the caller's
    transaction rolls back). The upload that brings the new training samples to the threshold
    opens a retrain in the same transaction, handed to a worker once it commits
    (domain.runs.start_if_due)."""
    uploads = [store(session, p, client, source, reading_id) for p in pictures]
    trains = any(u.created and not u.sample.evaluation and not u.sample.suspect for u in uploads)
    if trains and runs.is_due(session, retrain_threshold):
        runs.start_if_due(session, retrain_threshold)
    return uploads


def _insert_unless_stored(session: Session, values: dict[str, object]) -> ReturningInsert[Any]:
    """INSERT that does nothing where the same bytes or the same decoded pixels are stored."""
    table = Sample.__table__
    return (
        dialect_insert(session, table)
        .values(values)
        .on_conflict_do_nothing()
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


def confirm(session: Session, sample: Sample, retrain_threshold: int) -> None:
    """An admin or labeller vouches for the sample's label; the first confirmation's time is
    kept. A suspect training sample then trains, and counts toward the threshold as a new
    sample whatever its age (domain.runs): the confirmation that reaches it opens a retrain."""
    if sample.confirmed_at is not None:
        return
    sample.confirmed_at = runs.now()
    session.flush()  # the threshold query below runs on the connection: it must see this
    released = sample.suspect and not sample.evaluation
    if released and runs.is_due(session, retrain_threshold):
        runs.start_if_due(session, retrain_threshold)


def relabel(session: Session, sample: Sample, label: str, retrain_threshold: int) -> None:
    """An admin or labeller gives a held sample its right label, which vouches for it (it is
    confirmed): it then trains under that label."""
    sample.label = label
    sample.suspect_reason = f"relabelled {label!r} by a reviewer; was: {sample.suspect_reason}"
    confirm(session, sample, retrain_threshold)


def hold(session: Session, reasons: dict[int, str]) -> None:
    """Hold these samples as suspect, each with its reason (a run's healing); vouched-for ones
    (confirmed, or stored by a trusted key) are left as they are."""
    for sample_id, reason in reasons.items():
        session.execute(
            update(Sample)
            .where(Sample.id == sample_id, Sample.confirmed_at.is_(None), Sample.trusted.is_(False))
            .values(suspect=True, suspect_reason=reason)
        )


def delete(session: Session, sample: Sample) -> None:
    session.delete(sample)
    session.flush()


@dataclass(frozen=True)
class Glyphs:
    """Samples as the model sees them."""

    x: np.ndarray  # (N, 28, 28) uint8: core.preprocessing's output times 255
    y: np.ndarray  # (N,) class indices
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) sample ids
    # (N,) bool: vouched for (confirmed, or stored by a trusted key): never held by a run
    vouched: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def stack(
        xs: list[np.ndarray],
        ys: list[int],
        ids: list[int] | None = None,
        vouched: list[bool] | None = None,
    ) -> "Glyphs":
        x = np.stack(xs) if xs else np.zeros((0, 28, 28), np.uint8)
        ids = ids or []
        flags = np.array(vouched if vouched is not None else [False] * len(ys), bool)
        return Glyphs(x, np.array(ys, np.int32), np.array(ids, np.int64), flags)

    def without(self, ids: Iterable[int]) -> "Glyphs":
        keep = ~np.isin(self.ids, np.fromiter(ids, np.int64))
        return Glyphs(self.x[keep], self.y[keep], self.ids[keep], self.vouched[keep])


@dataclass(frozen=True)
class TrainingSet:
    """What a run learns from and is judged on, among the samples up to its watermark."""

    training: Glyphs
    evaluation: Glyphs  # trusted evaluation samples only
    waiting: list[int]  # new samples past their uploader's share of their class (MAX_KEY_SHARE)


@dataclass(frozen=True)
class _Row:
    id: int
    label: str
    evaluation: bool
    uploader: str | None
    vouched: bool  # trusted uploader or confirmed: never capped


def for_training(
    session: Session,
    watermark: int,
    labels: LabelSet,
    max_pixels: int,
    max_key_share: float = 1.0,
) -> TrainingSet:
    """Samples up to the watermark, through the serving preprocessing, so that what is trained
    is what is served. The evaluation set holds only trusted evaluation samples; untrusted ones
    are in neither set, nor are unconfirmed suspects. Of the samples the serving model has not
    learnt from, no uploader gives more than `max_key_share` of a class's (vouched-for ones
    aside): the rest wait for a later run (`waiting`)."""
    query = (
        select(
            Sample.id,
            Sample.image,
            Sample.label,
            Sample.evaluation,
            Sample.uploader,
            trusted().label("vouched"),
        )
        .where(
            Sample.id <= watermark,
            or_(Sample.evaluation.is_(False), trusted()),
            or_(cleared_samples(), trusted()),
        )
        .order_by(Sample.id)  # the order the training sees: the same for the same samples
    )
    rows, images = [], {}
    for sample_id, image, label, evaluation, uploader, vouched in session.execute(query):
        if label in labels.characters:  # else stored under another label set
            rows.append(_Row(sample_id, label, evaluation, uploader, bool(vouched)))
            images[sample_id] = image
    waiting = over_share(rows, runs.learned_up_to(session)[0], max_key_share)
    groups: dict[bool, tuple[list[np.ndarray], list[int], list[int], list[bool]]] = {
        True: ([], [], [], []),
        False: ([], [], [], []),
    }
    for row in rows:
        if row.id in waiting:
            continue
        image = images.pop(row.id)
        try:
            decoded = decode_image(image, max_bytes=len(image), max_pixels=max_pixels)
        except ImageError:
            continue  # stored before a stricter limit; never fails a run
        glyph = np.rint(preprocess_image(decoded.image) * 255).astype(np.uint8)
        xs, ys, ids, vouched = groups[row.evaluation]
        xs.append(glyph)
        ys.append(labels.index(row.label))
        ids.append(row.id)
        vouched.append(row.vouched)
    return TrainingSet(Glyphs.stack(*groups[False]), Glyphs.stack(*groups[True]), sorted(waiting))


def over_share(rows: list[_Row], learned_up_to: int, share: float) -> set[int]:
    """The new training samples (newer than what the serving model learnt from) that put their
    uploader past `share` of their class's new samples: the newest ones over the cap. A sole
    uploader gives half of a class at a time (at the default 0.5), the rest in later runs."""
    if share >= 1.0:
        return set()
    new: dict[str, list[_Row]] = {}
    for row in rows:
        if row.id > learned_up_to and not row.evaluation:
            new.setdefault(row.label, []).append(row)
    waiting = set()
    for class_rows in new.values():
        cap = max(1, math.floor(share * len(class_rows)))
        by_uploader: dict[str, list[_Row]] = {}
        for row in class_rows:
            if not row.vouched and row.uploader is not None:
                by_uploader.setdefault(row.uploader, []).append(row)
        for own in by_uploader.values():
            waiting.update(row.id for row in own[cap:])  # rows in id order: the newest wait
    return waiting


def upload_copies(uploads: int, nist_images: int, share: float, max_copies: int) -> int:
    """Copies of each training sample per epoch, so that samples make about `share` of what an
    epoch sees next to `nist_images` NIST images, at most `max_copies` (no memorising a few)."""
    if uploads == 0:
        return 1
    wanted = share * nist_images / ((1 - share) * uploads)
    return int(max(1, min(max_copies, round(wanted))))
