"""Celery worker: retraining when enough new uploads have arrived."""
