"""Celery workers: claim a job, run the engine, write the result, fenced."""
