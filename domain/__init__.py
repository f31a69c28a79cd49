"""The service's rules, shared by every process: samples, training runs, the model registry,
the gate, publishing work and predicting. Functions take a SQLAlchemy `Session` from the
caller; each state change has exactly one writer here. No FastAPI, no Celery worker code and
no TensorFlow: the API, the worker and the tools all build on this package.
"""
