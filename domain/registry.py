"""The model registry: which version serves. Every change of a version's status is made here.

Changes are serialised: a transaction that changes which version is active first takes the
registry lock (a Postgres advisory lock; SQLite has one writer at a time anyway), so an
activation and a registration never interleave, and the partial unique index
`uq_model_versions_one_active` is never the thing that decides between them.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import REPO_ROOT
from core.model_report import ModelReport
from db.models import ModelStatus, ModelVersion
from domain import runs

log = logging.getLogger(__name__)

BUNDLED_MODEL_DIR = REPO_ROOT / "trainer" / "bundled"
REGISTRY_LOCK = 0x68777231  # an arbitrary advisory-lock key of this application


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.active))


def active_version_number(session: Session) -> int | None:
    return session.scalar(
        select(ModelVersion.version).where(ModelVersion.status == ModelStatus.active)
    )


def lock_registry(session: Session) -> None:
    """Held until the transaction ends: one registry change at a time, across processes."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(REGISTRY_LOCK)))


def _make_active(session: Session, version: ModelVersion) -> None:
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == ModelStatus.active, ModelVersion.version != version.version)
        .values(status=ModelStatus.retired)
    )
    session.flush()  # the old one is retired before the unique index sees the new one
    version.status = ModelStatus.active
    version.activated_at = runs.now()


def activate(session: Session, version: int) -> ModelVersion | None:
    """Make `version` the serving one (rollback or forward); None if there is no such version.
    Every API process follows within MODEL_POLL_SECONDS."""
    lock_registry(session)
    model = session.get(ModelVersion, version, populate_existing=True)
    if model is None:
        session.rollback()
        return None
    if model.status != ModelStatus.active:
        _make_active(session, model)
    session.commit()
    return model


@dataclass(frozen=True)
class NewVersion:
    """A trained model to store: what trainer.pipeline produces."""

    onnx: bytes
    keras_weights: bytes | None
    report: ModelReport


def _version_row(new: NewVersion, status: ModelStatus) -> ModelVersion:
    return ModelVersion(
        status=status,
        labels=new.report.labels,
        architecture=new.report.architecture,
        onnx=new.onnx,
        onnx_sha256=hashlib.sha256(new.onnx).hexdigest(),
        keras_weights=new.keras_weights,
        metrics=new.report.metrics.model_dump(mode="json"),
        report=new.report.model_dump(mode="json"),
    )


def register_candidate(
    session: Session,
    run_id: int,
    attempt: int,
    new: NewVersion,
    promote: bool,
    reason: str,
    run_metrics: dict[str, Any],
) -> ModelVersion:
    """Store a run's candidate, active if it passed the gate, rejected if not, and end the run:
    one transaction, only while this attempt still owns the run."""
    run = runs.lock_owned_run(session, run_id, attempt)
    lock_registry(session)
    version = _version_row(new, ModelStatus.candidate)
    version.training_run_id = run_id
    session.add(version)
    session.flush()
    if promote:
        _make_active(session, version)
    else:
        version.status = ModelStatus.rejected
    runs.succeed(run, run_metrics, "promoted" if promote else "rejected", reason)
    session.commit()
    log.info("training run %s: version %s %s (%s)", run_id, version.version, version.status, reason)
    return version


def install_bundled(session: Session, model_dir: Path = BUNDLED_MODEL_DIR) -> int | None:
    """On first start with an empty registry, the bundled starter model becomes version 1.

    Safe to call from every replica at once: they take turns under the registry lock, so the
    first inserts version 1 and the others see it (without the lock the losers' failed
    inserts would use up version numbers).
    """
    lock_registry(session)
    if session.scalar(select(func.count()).select_from(ModelVersion)):
        session.rollback()  # ends the transaction, and with it the lock
        return None
    onnx_path = model_dir / "model.onnx"
    if not onnx_path.exists():
        log.warning("no bundled model at %s; predictions wait for a trained one", onnx_path)
        session.rollback()
        return None
    weights_path = model_dir / "model.weights.h5"
    new = NewVersion(
        onnx=onnx_path.read_bytes(),
        keras_weights=weights_path.read_bytes() if weights_path.exists() else None,
        report=ModelReport.model_validate_json((model_dir / "report.json").read_text()),
    )
    version = _version_row(new, ModelStatus.active)
    version.activated_at = runs.now()
    session.add(version)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    log.info("installed the bundled model as version %s", version.version)
    return version.version
