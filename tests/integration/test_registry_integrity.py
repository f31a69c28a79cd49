"""Registry and gate integrity (issue 19), against real Postgres, uvicorn and a Celery worker:
concurrent activations never answer 500 and leave one version active; an activation during a
registration waits its turn; an admin's rollback during a run is not undone by the run; the
evaluation samples that judge candidates cannot be chosen by uploaders.
"""

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import numpy_helper
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import func, select

from core.config import get_settings
from core.labels import LabelSet
from core.model_report import ModelReport
from db.models import ModelVersion, RunStatus, Sample, TrainingRun
from db.session import get_sessionmaker, unit_of_work
from domain import registry, runs, samples
from domain.gate import GateDecision
from testkit.images import png, stroke_image
from testkit.stack import Server, uvicorn_server
from tests.integration.conftest import TEST_ENV, add_model_version, wait_for


def versions() -> dict[int, str]:
    with get_sessionmaker()() as session:
        return dict(session.execute(select(ModelVersion.version, ModelVersion.status)).all())


def active_versions() -> list[int]:
    return [version for version, status in versions().items() if status == "active"]


def run_row(run_id: int) -> TrainingRun:
    with get_sessionmaker()() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        return run


@pytest.fixture
def server() -> Iterator[Server]:
    """uvicorn with 2 worker processes, as production runs it, on the test database."""
    with uvicorn_server("api.main:app", TEST_ENV, workers=2) as running:
        yield running


# --- Activation and registration, serialised -----------------------------------------------


def test_concurrent_activations_answer_200_or_a_json_409_and_leave_one_version_active(
    server: Server, admin_headers: dict[str, str]
) -> None:
    # The case: 4 threads activating 4 versions at once, 30 rounds (was 21 x 500).
    targets = [1, *(add_model_version() for _ in range(3))]
    statuses: Counter[int] = Counter()
    barrier = threading.Barrier(len(targets))  # cyclic: all 4 requests leave together
    with httpx.Client(base_url=server.url, timeout=30) as http, ThreadPoolExecutor(4) as pool:

        def activate(version: int) -> httpx.Response:
            barrier.wait()
            return http.post(f"/v1/models/{version}/activate", headers=admin_headers)

        for _ in range(30):
            for reply in pool.map(activate, targets):
                assert reply.status_code in (200, 409), reply.text
                assert reply.headers["content-type"] == "application/json"
                if reply.status_code == 409:
                    assert reply.json()["error"] == "registry_busy"
                statuses[reply.status_code] += 1
            assert len(active_versions()) == 1
    assert statuses[200] > 0
    assert sum(statuses.values()) == 120


def bundled_candidate() -> registry.NewVersion:
    model_dir = registry.BUNDLED_MODEL_DIR
    report = ModelReport.model_validate_json((model_dir / "report.json").read_text())
    return registry.NewVersion((model_dir / "model.onnx").read_bytes(), None, report)


def running_run() -> tuple[int, int]:
    """A run claimed by an attempt, as a worker holds it while training: (id, attempt)."""
    with unit_of_work() as session:
        run_id = runs.open_run(session, "manual", threshold=None)
        assert run_id is not None
        attempt = runs.claim(session, run_id)
        assert attempt is not None
        return run_id, attempt


def test_an_activation_during_a_registration_waits_its_turn(
    server: Server, admin_headers: dict[str, str]
) -> None:
    other = add_model_version()  # 2
    run_id, attempt = running_run()
    verdict = GateDecision(True, "better", gated_against=1)
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        ThreadPoolExecutor(1) as pool,
        get_sessionmaker()() as registering,
    ):
        registry.lock_registry(registering)  # the registration's transaction has begun
        activation = pool.submit(http.post, f"/v1/models/{other}/activate", headers=admin_headers)
        time.sleep(1.5)
        assert not activation.done(), "the activation did not wait for the registration"
        registry.register_candidate(registering, run_id, attempt, bundled_candidate(), verdict, {})
        registering.commit()  # the worker's unit of work ends: the lock goes with it
        reply = activation.result(timeout=30)
    assert reply.status_code == 200, reply.text
    # In turn: the candidate (3) was promoted, then the admin's activation of 2 came.
    assert versions() == {1: "retired", 2: "active", 3: "retired"}
    assert run_row(run_id).decision == "promoted"
    assert run_row(run_id).gated_against == 1


def test_an_activation_that_cannot_get_the_lock_in_time_answers_a_json_409(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client.get("/healthz")  # the bundled model is installed as version 1
    other = add_model_version()
    monkeypatch.setattr(get_settings(), "registry_lock_timeout_seconds", 0.5)
    with get_sessionmaker()() as holder:
        registry.lock_registry(holder)
        started = time.monotonic()
        reply = client.post(f"/v1/models/{other}/activate", headers=admin_headers)
        waited = time.monotonic() - started
        holder.rollback()
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"] == "registry_busy"
    assert reply.headers["retry-after"] == "1"
    assert 0.4 < waited < 5
    assert active_versions() == [1]
    again = client.post(f"/v1/models/{other}/activate", headers=admin_headers)
    assert again.status_code == 200, again.text
    assert active_versions() == [other]


def test_a_candidate_never_replaces_a_version_activated_after_its_run_started(
    client: TestClient,
) -> None:
    client.get("/healthz")
    other = add_model_version()  # 2
    run_id, attempt = running_run()
    with unit_of_work() as session:
        registry.activate(session, other)  # a rollback after the run started against 1
    better = GateDecision(True, "better than 1", gated_against=1)
    with unit_of_work() as session:
        registry.register_candidate(session, run_id, attempt, bundled_candidate(), better, {})
    assert versions() == {1: "retired", 2: "active", 3: "candidate"}
    run = run_row(run_id)
    assert (run.status, run.decision, run.gated_against) == ("succeeded", "candidate", 1)
    reason = run.decision_reason or ""
    assert "version 2 was activated after this run started" in reason
    assert "compared with version 1" in reason


def test_an_activation_back_to_the_gated_version_during_a_run_still_holds_the_candidate(
    client: TestClient,
) -> None:
    # 1 -> 2 -> 1 while the run trained: the version it was gated against serves again, but
    # an admin chose it after the run started; the run does not undo that choice either.
    client.get("/healthz")
    other = add_model_version()
    run_id, attempt = running_run()
    with unit_of_work() as session:
        registry.activate(session, other)
    with unit_of_work() as session:
        registry.activate(session, 1)
    better = GateDecision(True, "better than 1", gated_against=1)
    with unit_of_work() as session:
        registry.register_candidate(session, run_id, attempt, bundled_candidate(), better, {})
    assert versions() == {1: "active", 2: "retired", 3: "candidate"}
    assert run_row(run_id).decision == "candidate"


# --- Evaluation samples: not steerable, trusted only ----------------------------------------


def png_with_text(image: Image.Image, text: str) -> bytes:
    info = PngInfo()
    info.add_text("Comment", text)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


ADMIN = {"Authorization": f"Bearer {TEST_ENV['ADMIN_TOKEN']}"}


def upload(
    client: TestClient,
    data: bytes,
    label: str = "7",
    source: str = "upload",
    headers: dict[str, str] | None = None,
) -> dict:
    """Stored (by `headers`' key, or anonymously), read back as an admin sees it."""
    reply = client.post(
        "/v1/samples",
        files={"image": ("x.png", data)},
        data={"label": label, "source": source},
        headers=headers,
    )
    assert reply.status_code in (200, 201), reply.text
    return client.get(f"/v1/samples/{reply.json()['id']}", headers=ADMIN).json()


def test_re_encodings_of_one_picture_are_one_sample_on_one_side(client: TestClient) -> None:
    # The attack: re-save one picture with a changing PNG text chunk until it is held
    # out (was: 14 tries). Five pictures, 20 encodings each: the same decoded pixels are the
    # same sample, so every encoding lands where the first did.
    for seed in range(5):
        picture = stroke_image(seed)
        stored = [upload(client, png_with_text(picture, f"try {n}")) for n in range(20)]
        assert len({s["id"] for s in stored}) == 1
        assert len({s["evaluation"] for s in stored}) == 1
    with get_sessionmaker()() as session:
        assert session.scalar(select(func.count()).select_from(Sample)) == 5


def evaluation_upload(
    client: TestClient,
    source: str = "upload",
    headers: dict[str, str] | None = None,
    first_seed: int = 1000,
) -> dict:
    """Upload distinct pictures until one is kept for evaluation (about one in ten)."""
    for seed in range(first_seed, first_seed + 300):
        sample = upload(client, png(seed), source=source, headers=headers)
        if sample["evaluation"]:
            return sample
    pytest.fail("no evaluation sample in 300 uploads")


def gate_set_size() -> int:
    """How many evaluation samples a run would judge candidates on now."""
    settings = get_settings()
    with get_sessionmaker()() as session:
        watermark = session.scalar(select(func.max(Sample.id))) or 0
        chosen = samples.for_training(
            session, watermark, LabelSet(settings.labels), settings.max_image_pixels
        )
    return len(chosen.evaluation)


def test_an_untrusted_evaluation_sample_does_not_judge_candidates_and_a_confirmed_one_does(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    sample = evaluation_upload(client)
    assert sample["confirmed_at"] is None
    assert gate_set_size() == 0
    reply = client.post(f"/v1/samples/{sample['id']}/confirm", headers=admin_headers)
    assert reply.status_code == 200, reply.text
    confirmed_at = reply.json()["confirmed_at"]
    assert confirmed_at is not None
    assert gate_set_size() == 1
    again = client.post(f"/v1/samples/{sample['id']}/confirm", headers=admin_headers)
    assert again.json()["confirmed_at"] == confirmed_at  # the first confirmation is kept
    missing = client.post("/v1/samples/999999/confirm", headers=admin_headers)
    assert missing.status_code == 404
    assert missing.json()["error"] == "sample_not_found"


def test_evaluation_samples_from_a_labeller_judge_candidates_unconfirmed(
    client: TestClient, labeller_headers: dict[str, str]
) -> None:
    evaluation_upload(client, source="canvas")  # anonymous: `source` vouches for nothing
    assert gate_set_size() == 0
    evaluation_upload(client, headers=labeller_headers, first_seed=2000)
    assert gate_set_size() == 1


# --- A rollback during a run (real Celery worker; last: the worker starts here) -------------


def shifted_onnx() -> bytes:
    """The bundled model with its classes shifted by one (it answers "1" for a 0, "2" for a
    1...): poor on every class alike, so that any trained candidate beats it class by class."""
    model = onnx.load_from_string((registry.BUNDLED_MODEL_DIR / "model.onnx").read_bytes())
    for tensor in model.graph.initializer:
        if tensor.dims and tensor.dims[-1] == 47:  # the last layer's weights, bias, prior
            values = np.roll(numpy_helper.to_array(tensor), 1, axis=-1)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return model.SerializeToString()


def test_a_rollback_during_a_run_is_not_undone_by_the_run(
    client: TestClient, admin_headers: dict[str, str], celery_worker: object
) -> None:
    client.get("/healthz")  # the bundled model: version 1
    broken = add_model_version(onnx=shifted_onnx())  # 2, serving when the run starts
    assert client.post(f"/v1/models/{broken}/activate", headers=admin_headers).status_code == 200
    # The baseline too, so that the gate passes what beats it: the run's candidate would
    # replace the serving version if nothing else stopped it.
    assert client.post(f"/v1/models/{broken}/bless", headers=admin_headers).status_code == 200
    # A full retrain from scratch: far better than version 2, far worse than version 1.
    reply = client.post("/v1/training-runs", json={"full_retrain": True}, headers=admin_headers)
    assert reply.status_code == 201, reply.text
    run_id = reply.json()["id"]
    wait_for(lambda: run_row(run_id).progress > 0, timeout=120, interval=0.1)
    rollback = client.post("/v1/models/1/activate", headers=admin_headers)
    assert rollback.status_code == 200, rollback.text
    assert run_row(run_id).status == RunStatus.running, "the run ended before the rollback"

    run = wait_for(
        lambda: (r := run_row(run_id)).status in (RunStatus.succeeded, RunStatus.failed) and r,
        timeout=240,
        interval=1,
    )
    assert run.status == RunStatus.succeeded, run.error
    assert active_versions() == [1]  # the admin's rollback stuck
    assert versions()[3] == "candidate"  # kept, for an admin to promote by hand
    assert run.gated_against == broken
    assert run.decision == "candidate"
    reason = run.decision_reason or ""
    assert "version 1 was activated after this run started" in reason
    assert f"compared with version {broken}" in reason
    assert run.metrics is not None and run.metrics["active_version"] == broken
    served = client.post("/v1/predictions", files={"image": ("x.png", png(5))}).json()
    assert served["model_version"] == 1
