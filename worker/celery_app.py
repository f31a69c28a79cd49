"""The Celery app: `celery -A worker.celery_app worker` and `celery -A worker.celery_app beat`.

Configured in domain.queue, like the API's publisher; only the worker loads the task modules.
Messages only name the work (a training run id); its state lives in the database, so a lost
message is re-created by the reconciler and nothing is lost with Redis.
"""

from core.config import get_settings
from domain.queue import make_celery_app

app = make_celery_app(get_settings(), include=["worker.tasks"])
