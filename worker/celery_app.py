"""The Celery app: `celery -A worker.celery_app worker` and `celery -A worker.celery_app beat`.

Messages only name the work (a training run id); its state lives in the database, so a lost
message is re-created by the reconciler and nothing is lost with Redis.
"""

from celery import Celery

from core.config import get_settings

settings = get_settings()

app = Celery("handwriting", broker=settings.broker_url, include=["worker.tasks"])
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
            "task": "worker.tasks.reconcile",
            "schedule": 60.0,
        },
    },
    timezone="UTC",
)
if settings.broker_url.startswith("redis"):
    # Publishing from the API must not hang when Redis is away: fail fast, the reconciler
    # enqueues what was missed. max_retries=0: one connection attempt per publish; kombu's
    # default keeps retrying for ~6 s, holding a thread of the API's pool for each upload
    # (bench/faults.py redis-down: uploads fell from ~25/s to ~2/s). The worker's own
    # consumer connection retries by broker_connection_max_retries, unaffected.
    app.conf.broker_transport_options = {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "max_retries": 0,
    }
