"""Celery tasks: small, idempotent, and driven by rows in the database."""

import logging

from worker.celery_app import app
from worker.triggers import open_run, runs_to_enqueue

log = logging.getLogger(__name__)


@app.task(name="worker.tasks.retrain_if_due")
def retrain_if_due() -> int | None:
    """Enqueued after each stored upload: opens a training run when the threshold is crossed."""
    run_id = open_run("threshold")
    if run_id is not None:
        log.info("training run %s queued", run_id)
        train.delay(run_id)
    return run_id


@app.task(name="worker.tasks.train")
def train(run_id: int) -> str:
    """Carry out one training run. Safe to deliver twice: only one worker can claim it."""
    from worker.training import execute_run

    return execute_run(run_id)


@app.task(name="worker.tasks.reconcile")
def reconcile() -> list[int]:
    """Run by beat every minute: re-derive due work from the database and enqueue it.

    Catches a threshold crossing whose message was lost with the broker, a queued run whose
    message was lost, and a running run whose worker died (no heartbeat).
    """
    run_id = open_run("reconcile")
    due = runs_to_enqueue()
    if run_id is not None and run_id not in due:
        due.append(run_id)
    for due_id in due:
        train.delay(due_id)
    if due:
        log.info("reconcile enqueued training runs %s", due)
    return due
