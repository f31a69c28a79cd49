"""Labelled samples people upload: storing them, finding them, and what training sees of them.

About one sample in ten is kept for evaluation (judging candidates) instead of training; which
ones is decided once, at insert, and never changes.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from core.images import DecodedImage, ImageError, decode_image
from core.labels import LabelSet
from core.preprocessing import preprocess_image
from db.models import Sample, SampleSource
from domain import runs


class LabelConflict(Exception):
    """The same image is already stored with another label."""

    def __init__(self, existing: Sample) -> None:
        super().__init__(f"this image is already stored with label {existing.label!r}")
        self.existing = existing


def is_evaluation_sample(sha256: str) -> bool:
    """About 10% of samples are kept for evaluation; the hash decides, so it never changes."""
    return int(sha256[:8], 16) % 10 == 0


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
) -> Upload:
    """Store an uploaded image with its label, and say whether a retrain is now due.

    The same bytes with the same label again give the stored sample; with another label,
    LabelConflict. Uploads are the busiest write, so a new picture costs one transaction of
    two Core statements: INSERT .. ON CONFLICT DO NOTHING (which also settles two requests
    racing with the same bytes) and, for a training sample, the threshold check (domain.runs).
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
        "evaluation": is_evaluation_sample(decoded.sha256),
    }
    inserted = session.connection().execute(_insert_unless_stored(session, values)).first()
    if inserted is not None:
        due = (
            retrain_threshold is not None
            and not values["evaluation"]
            and runs.is_due(session, retrain_threshold)
        )
        session.commit()
        return Upload(Sample(**values, id=inserted.id, created_at=inserted.created_at), True, due)
    existing = session.scalar(select(Sample).where(Sample.sha256 == decoded.sha256))
    session.commit()
    if existing is None:  # deleted between the two statements: store it after all
        return store(session, data, decoded, label, submitted_label, source, retrain_threshold)
    if existing.label != label:
        raise LabelConflict(existing)
    return Upload(existing, False, False)


def _insert_unless_stored(session: Session, values: dict[str, object]) -> ReturningInsert[Any]:
    """INSERT that does nothing where the same bytes (sha256) are stored already."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = Sample.__table__
    return (
        insert(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(table.c.id, table.c.created_at)
    )


def page(session: Session, label: str | None, before_id: int | None, limit: int) -> list[Sample]:
    """Up to `limit` samples, newest first, older than `before_id` when given."""
    query = select(Sample).order_by(Sample.id.desc()).limit(limit)
    if label is not None:
        query = query.where(Sample.label == label)
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
    )


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
    session: Session, watermark: int, labels: LabelSet, max_pixels: int
) -> tuple[Glyphs, Glyphs]:
    """(training, evaluation) samples up to the watermark, through the serving preprocessing,
    so that what is trained is what is served."""
    groups: dict[bool, tuple[list[np.ndarray], list[int]]] = {True: ([], []), False: ([], [])}
    rows = session.execute(
        select(Sample.image, Sample.label, Sample.evaluation).where(Sample.id <= watermark)
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
