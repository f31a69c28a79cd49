"""Celery tasks: small, idempotent, and driven by rows in the database."""

import logging

from worker.celery_app import app
from worker.triggers import create_run_if_due

log = logging.getLogger(__name__)


@app.task(name="worker.tasks.retrain_if_due")
def retrain_if_due() -> int | None:
    """Enqueued after each stored upload: opens a training run when the threshold is crossed."""
    run_id = create_run_if_due(trigger="threshold")
    if run_id is not None:
        log.info("training run %s queued", run_id)
    return run_id


@app.task(name="worker.tasks.reconcile")
def reconcile() -> int | None:
    """Run by beat every minute: catches a crossing whose message was lost with the broker."""
    return create_run_if_due(trigger="reconcile")
