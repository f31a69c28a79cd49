"""The task queue: one Celery configuration, and publishing work by task name.

The API publishes with `send_task` and the task's name, so it never imports the worker's
code (or, through it, TensorFlow). Messages only name work whose state is in the database:
publishing may fail (Redis away) and nothing is lost, beat's reconcile re-derives the work.
"""

import logging
from functools import lru_cache

from celery import Celery

from core.config import Settings, get_settings

log = logging.getLogger(__name__)

# Task names, as worker/tasks.py registers them.
TRAIN_TASK = "worker.tasks.train"
RECONCILE_TASK = "worker.tasks.reconcile"
RECONCILE_EVERY_SECONDS = 60.0


def make_celery_app(settings: Settings, include: list[str] | None = None) -> Celery:
    """The Celery app of every process: the worker passes its task modules in `include`."""
    app = Celery("handwriting", broker=settings.broker_url, include=include or [])
    app.conf.update(
        task_default_queue=settings.task_queue,
        # A task is acknowledged only once it has finished: a worker that dies mid-task leaves
        # the message to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # results live in the database, not in a result backend
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "reconcile-training-runs": {
                "task": RECONCILE_TASK,
                "schedule": RECONCILE_EVERY_SECONDS,
            },
        },
        timezone="UTC",
    )
    if settings.broker_url.startswith("redis"):
        # Publishing must not hang when Redis is away: fail fast, the reconciler enqueues what
        # was missed. max_retries=0: one connection attempt per publish; kombu's default keeps
        # retrying for ~6 s, holding a thread of the API's pool for each request
        # (bench/faults.py redis-down: uploads fell from ~25/s to ~2/s). The worker's own
        # consumer connection retries by broker_connection_max_retries, unaffected.
        app.conf.broker_transport_options = {
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            "max_retries": 0,
        }
    return app


@lru_cache
def publisher() -> Celery:
    """The app a non-worker process (the API) publishes with: no task modules loaded."""
    return make_celery_app(get_settings())


def publish_training(run_id: int, app: Celery | None = None) -> bool:
    """Hand a queued run to a worker. False when the broker is down: reconcile sends it later."""
    try:
        (app or publisher()).send_task(TRAIN_TASK, args=(run_id,), retry=False)
    except Exception as exc:  # broker unreachable: the run is queued in the database anyway
        log.warning("could not publish training run %s (%s); reconcile will", run_id, exc)
        return False
    return True
