"""The retrain trigger: decided in the database, exactly once, through a real Celery worker."""

import subprocess
import threading

from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import RunStatus, Sample, TrainingRun
from db.session import get_sessionmaker
from tests.conftest import wait_for
from tests.imagegen import png
from worker.triggers import open_run


def training_runs() -> list[TrainingRun]:
    with get_sessionmaker()() as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def add_samples(count: int, start: int, holdout: bool = False) -> None:
    with get_sessionmaker()() as session:
        for i in range(start, start + count):
            session.add(
                Sample(
                    sha256=f"{i:064x}",
                    image=b"x",
                    content_type="image/png",
                    width=1,
                    height=1,
                    label="1",
                    submitted_label="1",
                    source="upload",
                    holdout=holdout,
                )
            )
        session.commit()


def test_not_due_below_threshold_and_holdout_does_not_count() -> None:
    add_samples(4, 0)
    add_samples(10, 100, holdout=True)
    assert open_run("threshold") is None
    assert training_runs() == []


def test_concurrent_checks_open_exactly_one_run() -> None:
    add_samples(5, 0)  # threshold is 5 in tests
    results: list[int | None] = []
    barrier = threading.Barrier(12)

    def check() -> None:
        barrier.wait()
        results.append(open_run("threshold"))

    threads = [threading.Thread(target=check) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = training_runs()
    assert len(runs) == 1
    assert [r for r in results if r is not None] == [runs[0].id]
    assert runs[0].status == RunStatus.queued
    assert runs[0].sample_watermark == 5


def test_next_run_counts_only_samples_after_the_watermark() -> None:
    add_samples(5, 0)
    first = open_run("threshold")
    assert first is not None
    with get_sessionmaker()() as session:
        session.get(TrainingRun, first).status = RunStatus.succeeded
        session.commit()
    add_samples(4, 10)
    assert open_run("threshold") is None
    add_samples(1, 20)
    second = open_run("threshold")
    assert second is not None and second != first


def test_uploads_through_the_api_reach_the_real_worker(
    client: TestClient, celery_worker: subprocess.Popen[bytes]
) -> None:
    training = 0
    seed = 0
    while training < 5:
        reply = client.post(
            "/v1/samples", files={"image": ("x.png", png(seed), "image/png")}, data={"label": "2"}
        )
        assert reply.status_code == 201
        training += not reply.json()["holdout"]
        seed += 1
    runs = wait_for(training_runs, timeout=30)
    assert len(runs) == 1
    assert runs[0].trigger == "threshold"
    with get_sessionmaker()() as session:
        newest = session.scalar(select(Sample.id).order_by(Sample.id.desc()).limit(1))
    assert runs[0].sample_watermark == newest
    assert celery_worker.poll() is None
