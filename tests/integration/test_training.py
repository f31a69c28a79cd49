"""The learning loop with the real worker: runs train, the gate decides, the API follows.

Training in tests uses the production code path with small settings (conftest TEST_ENV):
one epoch over a few thousand NIST images, warm-started from the bundled model.
"""

import os
import signal
import subprocess

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import get_settings
from db.models import ModelStatus, ModelVersion, RunStatus, TrainingRun
from db.session import get_sessionmaker, unit_of_work
from domain import runs
from testkit.images import encode, png
from testkit.nist import training_characters
from testkit.stack import NIST_DATA_DIR
from tests.integration.conftest import (
    ADMIN_TOKEN,
    celery_worker_command,
    start_test_process,
    stop_process,
    wait_for,
)
from worker import tasks
from worker.training import execute_run

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def open_manual_run(full_retrain: bool = False) -> int | None:
    with unit_of_work() as session:
        return runs.open_run(session, "manual", threshold=None, full_retrain=full_retrain)


def run_row(run_id: int) -> TrainingRun:
    with get_sessionmaker()() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        return run


def versions() -> dict[int, str]:
    with get_sessionmaker()() as session:
        return dict(session.execute(select(ModelVersion.version, ModelVersion.status)).all())


def upload_nist(client: TestClient, count: int, offset: int = 0) -> int:
    """Uploads `count` NIST characters of the training part (never holdout writers, which the
    gate scores on); how many of them are training samples (the others are evaluation samples,
    which judge candidates only once an admin trusts them) the serving model did not find
    suspect."""
    images, labels = training_characters(count, offset)
    training = 0
    for pixels, label in zip(images, labels, strict=True):
        reply = client.post(
            "/v1/samples",
            files={"image": ("x.png", encode(Image.fromarray(pixels)))},
            data={"label": label},
        )
        assert reply.status_code in (200, 201), reply.text
        # Its side, as an admin sees it (the uploader is not told).
        sample = client.get(f"/v1/samples/{reply.json()['id']}", headers=ADMIN).json()
        training += not sample["evaluation"] and sample["status"] != "suspect"
    return training


def test_manual_run_trains_through_the_worker_and_the_api_serves_the_result(
    client: TestClient, admin_headers: dict[str, str], celery_worker: subprocess.Popen[bytes]
) -> None:
    training = upload_nist(client, 4)  # below RETRAIN_THRESHOLD (5): no automatic run
    reply = client.post("/v1/training-runs", headers=admin_headers)
    assert reply.status_code == 201, reply.text
    run_id = reply.json()["id"]
    # Published before the reply is read back: an idle worker may have claimed it already.
    assert reply.json()["status"] in ("queued", "running")
    # A second request while one is open is refused, naming the open run.
    again = client.post("/v1/training-runs", headers=admin_headers)
    assert again.status_code == 409
    assert again.json()["training_run_id"] == run_id

    def finished() -> dict | None:
        run = client.get(f"/v1/training-runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    run = wait_for(finished, timeout=240, interval=1)
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"] == 1.0
    assert run["decision"] in ("promoted", "rejected")
    assert run["decision_reason"]
    metrics = run["metrics"]
    assert metrics["warm_start"] is True
    assert metrics["training_samples"] == training
    assert metrics["evaluation_samples"] == 0  # none confirmed by an admin: none judges
    assert 0.5 < metrics["candidate"]["test_accuracy"] <= 1.0
    assert metrics["active"]["test_accuracy"] > 0.8
    if run["decision"] == "promoted":
        assert versions() == {1: "retired", 2: "active"}
        served = wait_for(
            lambda: (
                client.post("/v1/predictions", files={"image": ("x.png", png(1, (28, 28)))}).json()[
                    "model_version"
                ]
                == 2
            ),
            timeout=10,
        )
        assert served
    else:
        assert versions() == {1: "active", 2: "rejected"}


def test_a_worse_candidate_is_rejected_and_the_active_model_keeps_serving(
    client: TestClient,
) -> None:
    # A full retrain from scratch on 1,000 images for one epoch: far worse than the bundled one.
    run_id = open_manual_run(full_retrain=True)
    assert run_id is not None
    assert execute_run(run_id) == RunStatus.succeeded
    run = run_row(run_id)
    assert run.decision == "rejected"
    assert "NIST test accuracy" in (run.decision_reason or "")
    assert versions() == {1: "active", 2: "rejected"}
    reply = client.post("/v1/predictions", files={"image": ("x.png", png(2, (9, 9)))})
    assert reply.json()["model_version"] == 1


def test_a_failing_run_records_its_error_and_changes_nothing(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    client.get("/healthz")  # the bundled model is installed at start
    monkeypatch.setattr(get_settings(), "nist_data_dir", tmp_path / "nowhere")
    monkeypatch.setattr(get_settings(), "nist_source", str(tmp_path / "no-archive.zip"))
    run_id = open_manual_run()
    assert run_id is not None
    assert execute_run(run_id) == RunStatus.failed
    run = run_row(run_id)
    assert run.status == RunStatus.failed
    assert "nowhere" in (run.error or "")
    # The admin is told what to do, in a line; nobody else sees the server's paths.
    told = client.get(f"/v1/training-runs/{run_id}", headers=admin_headers).json()["error"]
    assert "nowhere" in told and "no-archive.zip" in told and "Traceback" not in told
    assert "set NIST_DATA_DIR" in told and "NIST_SOURCE" in told
    public = client.get(f"/v1/training-runs/{run_id}").json()["error"]
    assert public == "NistDataError (an admin sees the details)"
    assert client.get("/v1/training-runs").json()[0]["error"] == public
    assert versions() == {1: "active"}
    # The failed run no longer blocks the next one.
    assert open_manual_run() is not None


def test_a_first_run_fetches_the_nist_data_it_lacks_from_nist_source(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A fresh machine: no NIST data where NIST_DATA_DIR points; the first run fetches it from
    NIST_SOURCE (here a local copy laid out as NIST_DATA_DIR, as no test reaches NIST) and
    trains; the next run finds it there."""
    client.get("/healthz")
    fresh = tmp_path / "nist"
    monkeypatch.setattr(get_settings(), "nist_data_dir", fresh)
    monkeypatch.setattr(get_settings(), "nist_source", str(NIST_DATA_DIR))
    written: list[dict] = []  # what the run said of itself, as the page reads it
    record_progress = runs.record_progress

    def recorded(session: Session, run_id: int, attempt: int, **values: object) -> None:
        written.append(values)
        record_progress(session, run_id, attempt, **values)

    monkeypatch.setattr(runs, "record_progress", recorded)
    run_id = open_manual_run()
    assert run_id is not None
    assert execute_run(run_id) == RunStatus.succeeded, run_row(run_id).error
    # While it fetches, the run says so (a download also says how far, in megabytes).
    assert [v["phase"] for v in written if "phase" in v][:3] == ["loading", "fetching", "training"]
    fetched = {p.relative_to(fresh) for p in fresh.rglob("emnist-*")}
    wanted = {p.relative_to(NIST_DATA_DIR) for p in NIST_DATA_DIR.rglob("emnist-*")}
    assert fetched == wanted


def test_a_run_whose_worker_is_killed_is_retried_to_success_by_the_reconciler(
    client: TestClient, tmp_path, celery_worker: subprocess.Popen[bytes]
) -> None:
    client.get("/healthz")
    # A second worker on its own queue takes the run, then dies mid-training.
    doomed_queue = f"{os.environ['TASK_QUEUE']}-doomed"
    doomed = start_test_process(celery_worker_command("-Q", doomed_queue), tmp_path / "doomed.log")
    try:
        run_id = open_manual_run()
        assert run_id is not None
        tasks.train.apply_async((run_id,), queue=doomed_queue)
        wait_for(lambda: run_row(run_id).progress > 0, timeout=120, interval=0.5)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        stop_process(doomed)
    assert run_row(run_id).status == RunStatus.running
    assert versions() == {1: "active"}  # nothing half-done reached the registry

    # Beat's reconcile (called here directly) sees no heartbeat for RUN_STALE_SECONDS and
    # hands the run to the live worker.
    wait_for(lambda: run_id in tasks.reconcile(), timeout=30, interval=1)
    run = wait_for(
        lambda: (r := run_row(run_id)).status in (RunStatus.succeeded, RunStatus.failed) and r,
        timeout=240,
        interval=1,
    )
    assert run.status == RunStatus.succeeded, run.error
    assert run.attempts == 2
    assert set(versions()) == {1, 2}
    assert ModelStatus.active in versions().values()
