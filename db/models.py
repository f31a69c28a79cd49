"""The schema. It only ever changes through an Alembic migration (db/migrations/versions)."""

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY, so BigInteger falls back to Integer there.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# A deleted row's id never comes back (SQLite otherwise reuses the last one; Postgres never).
SQLITE_IDS_NEVER_REUSED = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON}


class SampleSource(enum.StrEnum):
    upload = "upload"
    canvas = "canvas"
    correction = "correction"
    reading = "reading"  # a character of a row (/v1/readings) whose reading a user corrected


class SampleStatus(enum.StrEnum):
    """Derived from the row (suspect, confirmed_at); not a column."""

    accepted = "accepted"
    suspect = "suspect"
    confirmed = "confirmed"


class Role(enum.StrEnum):
    """What an API key may do. Anonymous clients have no role."""

    admin = "admin"  # everything, including keys, the registry and retrains
    labeller = "labeller"  # trusted labels: never held as suspect, its evaluation samples judge
    client = "client"  # an application using the service: uploads and predictions, rate-limited


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class RunPhase(enum.StrEnum):
    """What a running run is doing, in the order a run goes through it (worker/training.py)."""

    loading = "loading"  # the run, the NIST data, the uploads
    fetching = "fetching"  # a first run downloading the NIST data from NIST_SOURCE
    training = "training"
    calibrating = "calibrating"  # exported to ONNX, its confidences calibrated
    scoring = "scoring"  # the candidate on the NIST sets and the evaluation uploads
    indexing = "indexing"  # the NIST neighbours its uploads' evidence reads
    judging = "judging"  # against the serving model and the baseline (scores kept per version)
    registering = "registering"


# A run in one of these is open; the database holds at most one open run (the index below).
OPEN_RUN_STATUSES = (RunStatus.queued, RunStatus.running)
_RUN_IS_OPEN = text(f"status IN ({', '.join(repr(s.value) for s in OPEN_RUN_STATUSES)})")


class ModelStatus(enum.StrEnum):
    active = "active"
    candidate = "candidate"
    rejected = "rejected"
    retired = "retired"


def _check_in(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Sample(Base):
    """A labelled image a user sent. The original bytes are kept as they came."""

    __tablename__ = "samples"
    __table_args__ = (
        CheckConstraint(_check_in("source", SampleSource), name="ck_samples_source"),
        Index("ix_samples_created_at_id", "created_at", "id"),
        Index("ix_samples_label_id", "label", "id"),
        Index("uq_samples_pixels_sha256", "pixels_sha256", unique=True),
        Index("ix_samples_confirmed_at", "confirmed_at"),
        SQLITE_IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    image: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(1))
    submitted_label: Mapped[str] = mapped_column(String(1))
    source: Mapped[str] = mapped_column(String(16), default=SampleSource.upload.value)
    # An evaluation sample: kept for judging candidates rather than for training; decided
    # once, at insert, so it never changes.
    evaluation: Mapped[bool] = mapped_column(Boolean)
    # When an admin vouched for the label: only trusted evaluation samples judge candidates.
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # What the serving model read when the sample was stored. Suspect: it found the label very
    # unlikely while confident in another; kept out of training until an admin confirms it.
    suspect: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    model_label: Mapped[str | None] = mapped_column(String(1), nullable=True)
    model_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Why it is suspect (or what the evidence said), in words (domain/evidence.py).
    suspect_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The row it was cut from, for a character of a corrected reading.
    reading_id: Mapped[int | None] = mapped_column(
        ForeignKey("readings.id", ondelete="SET NULL"), nullable=True
    )
    # Who stored it: the key (None: anonymous, or before keys existed) and an uploader identity
    # ("key:<id>", or "address:<keyed hash>" for an anonymous client; None before keys existed).
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True
    )
    uploader: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # Stored by an admin or labeller key: its label is vouched for (never suspect, and as an
    # evaluation sample it judges candidates). Decided at insert from the key, never the form.
    trusted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # core.images.DecodedImage.pixels_sha256: the same picture in another file is the same sample.
    pixels_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TrainingRun(Base):
    """One attempt to train a candidate model. Its row is the state; the message only names it."""

    __tablename__ = "training_runs"
    __table_args__ = (
        CheckConstraint(_check_in("status", RunStatus), name="ck_training_runs_status"),
        # At most one run is queued or running at any time, across every API and worker.
        Index(
            "uq_training_runs_one_open",
            text("(1)"),
            unique=True,
            postgresql_where=_RUN_IS_OPEN,
            sqlite_where=_RUN_IS_OPEN,
        ),
        SQLITE_IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.queued.value)
    trigger: Mapped[str] = mapped_column(String(16))  # threshold, manual, reconcile
    full_retrain: Mapped[bool] = mapped_column(Boolean, default=False)
    # Samples with id <= watermark are included in this run; newer ones count toward the next.
    sample_watermark: Mapped[int] = mapped_column(BigInteger, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)  # RunPhase, running
    phase_detail: Mapped[str | None] = mapped_column(String(64), nullable=True)  # "12 of 535 MB"
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The model version the candidate was (last) compared with; None before a serving one.
    gated_against: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelVersion(Base):
    """A trained model in the registry: ONNX bytes to serve, Keras weights to warm-start from."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_check_in("status", ModelStatus), name="ck_model_versions_status"),
        # Exactly one version serves at a time.
        Index(
            "uq_model_versions_one_active",
            text("(1)"),
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        SQLITE_IDS_NEVER_REUSED,
    )

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default=ModelStatus.candidate.value)
    labels: Mapped[str] = mapped_column(String(128))
    architecture: Mapped[str] = mapped_column(String(64))
    onnx: Mapped[bytes] = mapped_column(LargeBinary)
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    keras_weights: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # NIST examples as this version sees them (core/neighbours.py): the uploads' evidence.
    neighbour_index: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The gate's fixed reference for its label set: the newest blessed version (the bundled
    # model when it is installed, or one an admin blesses).
    blessed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelScores(Base):
    """A version's scores on the NIST sets a run's gate compares it on (the test split and the
    headline holdout slice), computed once and kept: a later run scores only its candidate.
    `sets_key` fingerprints the images scored; other images are scored (and kept) anew."""

    __tablename__ = "model_scores"
    __table_args__ = (
        UniqueConstraint("version", "sets_key", name="uq_model_scores_version_sets"),
        SQLITE_IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[int] = mapped_column(
        ForeignKey("model_versions.version", ondelete="CASCADE"), index=True
    )
    sets_key: Mapped[str] = mapped_column(String(64))
    sets: Mapped[dict[str, Any]] = mapped_column(JSON)  # set name -> core.model_report.SetScore
    test_predicted: Mapped[bytes] = mapped_column(LargeBinary)  # uint8: each test image's class
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Reading(Base):
    """A picture of a row of characters and what the serving model read in it. Its characters'
    pictures are kept, so that a user's correction stores exactly what was read as samples."""

    __tablename__ = "readings"
    __table_args__ = (SQLITE_IDS_NEVER_REUSED,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    image: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[int] = mapped_column(Integer)
    allowed_labels: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expected_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float)
    # Per character: box, label, confidence, top candidates, low_confidence, space_before.
    characters: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # Per character, its picture as a base64 PNG: what a correction stores as a sample.
    crops: Mapped[list[str]] = mapped_column(JSON)
    corrected_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    corrected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    """A client's key. Only its SHA-256 is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(_check_in("role", Role), name="ck_api_keys_role"),
        SQLITE_IDS_NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    # The key's public part, to find its row without scanning: hwk_<prefix>_<secret>.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServiceKey(Base):
    """A secret the service generates once and keeps: every process reads the same one."""

    __tablename__ = "service_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
