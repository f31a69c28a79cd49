"""Celery tasks: small, idempotent, and driven by rows in the database."""

import logging

from core.config import get_settings
from db.session import unit_of_work
from domain import runs
from domain.queue import RECONCILE_TASK, TRAIN_TASK, publish_training
from worker.celery_app import app
from worker.indexing import index_active_version

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK)
def train(run_id: int) -> str:
    """Carry out one training run. Safe to deliver twice: only one worker can claim it."""
    from worker.training import execute_run  # TensorFlow loads here, in the worker only

    return execute_run(run_id)


@app.task(name=RECONCILE_TASK)
def reconcile() -> list[int]:
    """Run by beat every minute: re-derive due work from the database and enqueue it.

    Catches a threshold crossing whose message was lost with the broker, a queued run whose
    message was lost, and a running run whose worker died (no heartbeat); and gives the active
    model version its neighbour index if it has none (worker/indexing.py).
    """
    settings = get_settings()
    with unit_of_work() as session:
        runs.open_run(session, "reconcile", threshold=settings.retrain_threshold)
        due = runs.runs_to_enqueue(session, settings.run_stale_seconds, settings.max_run_attempts)
    for run_id in due:
        publish_training(run_id, app)
    if due:
        log.info("reconcile enqueued training runs %s", due)
    try:
        index_active_version()
    except Exception:  # no NIST data here yet, say: uploads go unweighed meanwhile
        log.exception("could not build the active model version's neighbour index")
    return due
