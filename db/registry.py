"""The model registry in Postgres: which version serves, and the bundled starter model."""

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import REPO_ROOT
from db.models import ModelStatus, ModelVersion

log = logging.getLogger(__name__)

BUNDLED_MODEL_DIR = REPO_ROOT / "trainer" / "bundled"
BUNDLED_INSTALL_LOCK = 0x68777231  # an arbitrary advisory-lock key of this application


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.active))


def active_version_number(session: Session) -> int | None:
    return session.scalar(
        select(ModelVersion.version).where(ModelVersion.status == ModelStatus.active)
    )


def install_bundled_model(session: Session, model_dir: Path = BUNDLED_MODEL_DIR) -> int | None:
    """On first start with an empty registry, the bundled starter model becomes version 1.

    Safe to call from every replica at once: on Postgres the replicas take turns under an
    advisory lock, so the first inserts version 1 and the others see it (without the lock the
    losers' failed inserts would use up version numbers). SQLite has one writer at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(BUNDLED_INSTALL_LOCK)))
    if session.scalar(select(func.count()).select_from(ModelVersion)):
        session.rollback()  # ends the transaction, and with it the lock
        return None
    onnx_path = model_dir / "model.onnx"
    if not onnx_path.exists():
        log.warning("no bundled model at %s; predictions wait for a trained one", onnx_path)
        session.rollback()
        return None
    onnx = onnx_path.read_bytes()
    report_path = model_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    weights_path = model_dir / "model.weights.h5"
    version = ModelVersion(
        status=ModelStatus.active,
        labels=report.get("labels", ""),
        architecture=report.get("architecture", "unknown"),
        onnx=onnx,
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
        keras_weights=weights_path.read_bytes() if weights_path.exists() else None,
        metrics=report.get("metrics", {}),
        report=report,
        activated_at=datetime.now(UTC),
    )
    session.add(version)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    log.info("installed the bundled model as version %s", version.version)
    return version.version
