"""The retrain trigger: decided in the database, exactly once, through a real Celery worker."""

import subprocess
import threading

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.config import get_settings
from db.models import RunStatus, Sample, TrainingRun
from db.session import after_commit, get_sessionmaker, unit_of_work
from domain import runs
from testkit.images import png
from tests.integration.conftest import wait_for


def open_run(trigger: str) -> int | None:
    with unit_of_work() as session:
        return runs.open_run(session, trigger, threshold=get_settings().retrain_threshold)


def training_runs() -> list[TrainingRun]:
    with get_sessionmaker()() as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.id)))


def add_sample(session: Session, i: int, evaluation: bool = False) -> None:
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
            evaluation=evaluation,
        )
    )
    session.flush()


def add_samples(count: int, start: int, evaluation: bool = False) -> None:
    with unit_of_work() as session:
        for i in range(start, start + count):
            add_sample(session, i, evaluation)


def blocked_on_a_lock() -> bool:
    with get_sessionmaker()() as session:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return bool(session.scalar(query))


def test_an_upload_that_loses_the_race_to_open_a_run_is_still_stored() -> None:
    """A run is opened in the upload's own transaction, in a savepoint: the upload whose insert
    of a second open run hits the unique index (another transaction opened one first) keeps
    its sample and its message-after-commit; it opens nothing."""
    add_samples(5, 0)
    published: list[str] = []
    winner = get_sessionmaker()()
    first = runs.open_run(winner, "threshold", threshold=None)  # flushed: holds the index
    assert first is not None
    opened: list[int | None] = []

    def losing_upload() -> None:
        with unit_of_work() as session:
            add_sample(session, 99)
            after_commit(session, lambda: published.append("stored"))
            opened.append(runs.open_run(session, "threshold", threshold=None))

    loser = threading.Thread(target=losing_upload)
    loser.start()
    wait_for(blocked_on_a_lock)  # the loser's insert waits on the winner's index entry
    winner.commit()
    winner.close()
    loser.join(timeout=30)
    assert opened == [None]
    assert published == ["stored"]
    assert [r.id for r in training_runs()] == [first]
    with get_sessionmaker()() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 6


def test_not_due_below_threshold_and_evaluation_samples_do_not_count() -> None:
    add_samples(4, 0)
    add_samples(10, 100, evaluation=True)
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
    opened = training_runs()
    assert len(opened) == 1
    assert [r for r in results if r is not None] == [opened[0].id]
    assert opened[0].status == RunStatus.queued
    assert opened[0].sample_watermark == 5


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
    client: TestClient, celery_worker: subprocess.Popen[bytes], admin_headers: dict[str, str]
) -> None:
    training = 0
    seed = 0
    while training < 5 and seed < 200:  # an evaluation sample does not count
        reply = client.post(
            "/v1/samples",
            files={"image": ("x.png", png(seed), "image/png")},
            data={"label": "2"},
            headers=admin_headers,  # its side shows in the reply
        )
        assert reply.status_code == 201
        training += not reply.json()["evaluation"] and reply.json()["status"] != "suspect"
        seed += 1
    opened = wait_for(training_runs, timeout=30)
    assert len(opened) == 1
    assert opened[0].trigger == "threshold"
    with get_sessionmaker()() as session:
        newest = session.scalar(select(Sample.id).order_by(Sample.id.desc()).limit(1))
    assert opened[0].sample_watermark == newest
    # The run's one message reached the real worker, which claimed the run.
    wait_for(lambda: training_runs()[0].status != RunStatus.queued, timeout=30)
    assert celery_worker.poll() is None


def test_a_message_waits_for_its_commit_and_goes_with_a_rollback() -> None:
    published: list[str] = []
    with get_sessionmaker()() as session:
        add_sample(session, 1)
        after_commit(session, lambda: published.append("rolled back"))
        session.rollback()
        add_sample(session, 2)
        after_commit(session, lambda: published.append("committed"))
        assert published == []  # not before the commit
        session.commit()
    assert published == ["committed"]
