"""No-op tasks for the RQ and Celery contenders of bench/queue/run.py.

Imported by the workers run.py starts (it puts this folder on PYTHONPATH). The Celery app
reads its broker and result-backend URLs from the environment run.py sets."""
import os


def noop():
    """RQ's task: does nothing, so RQ's numbers measure its queue alone."""
    return None


_celery_app = None


def celery_app():
    global _celery_app
    if _celery_app is None:
        from celery import Celery

        app = Celery(
            "bench_tasks",
            broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
            backend=os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/1"),
        )
        app.conf.update(
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_expires=3600,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
        )

        @app.task(name="bench.noop")
        def celery_noop():
            return None

        _celery_app = app
    return _celery_app


# `celery -A bench_tasks worker` finds this attribute only when Celery is wanted.
if os.environ.get("BENCH_CELERY_BROKER"):
    app = celery_app()
