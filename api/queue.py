"""Publishing to the task queue from the API. Never fails a request: the database is the truth."""

import logging

log = logging.getLogger(__name__)


def enqueue_retrain_check() -> None:
    """Ask a worker whether a retrain is due. If the broker is down the beat reconciler will."""
    from worker.tasks import retrain_if_due

    try:
        retrain_if_due.apply_async(retry=False)
    except Exception as exc:  # broker unreachable: the upload is stored, reconcile catches up
        log.warning("could not enqueue retrain check (%s); the reconciler will", exc)


def enqueue_training(run_id: int) -> None:
    """Hand a queued run to a worker. If the broker is down the reconciler enqueues it."""
    from worker.tasks import train

    try:
        train.apply_async((run_id,), retry=False)
    except Exception as exc:
        log.warning("could not enqueue training run %s (%s); the reconciler will", run_id, exc)
