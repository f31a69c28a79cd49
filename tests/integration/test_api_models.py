"""/v1/models and /v1/training-runs: the registry as the API shows it."""

import hashlib

from fastapi.testclient import TestClient

from db.models import TrainingRun
from db.session import get_sessionmaker
from domain.registry import BUNDLED_MODEL_DIR
from testkit.images import png
from tests.integration.conftest import add_model_version


def test_first_start_installs_the_bundled_model_as_version_1(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert [(m["version"], m["status"]) for m in models] == [(1, "active")]
    active = client.get("/v1/models/active").json()
    assert active["version"] == 1
    assert active["labels"] == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    assert active["report"]
    onnx = client.get("/v1/models/1/onnx")
    assert onnx.status_code == 200
    assert onnx.content == (BUNDLED_MODEL_DIR / "model.onnx").read_bytes()
    assert hashlib.sha256(onnx.content).hexdigest() == active["onnx_sha256"]


def test_activate_switches_serving_and_rolls_back(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    version = add_model_version()
    assert client.post(f"/v1/models/{version}/activate").status_code == 401
    reply = client.post(f"/v1/models/{version}/activate", headers=admin_headers)
    assert reply.status_code == 200
    assert reply.json()["status"] == "active"
    statuses = {m["version"]: m["status"] for m in client.get("/v1/models").json()}
    assert statuses == {1: "retired", version: "active"}
    image = {"image": ("x.png", png(1))}
    assert client.post("/v1/predictions", files=image).json()["model_version"] == version
    # Roll back.
    assert client.post("/v1/models/1/activate", headers=admin_headers).status_code == 200
    assert client.post("/v1/predictions", files=image).json()["model_version"] == 1
    assert client.get("/v1/models/active").json()["version"] == 1


def test_unknown_model_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    for reply in (
        client.get("/v1/models/99"),
        client.get("/v1/models/99/onnx"),
        client.post("/v1/models/99/activate", headers=admin_headers),
    ):
        assert reply.status_code == 404
        assert reply.json()["error"] == "model_not_found"


def test_training_runs_are_listed_newest_first(client: TestClient) -> None:
    with get_sessionmaker()() as session:
        for status in ("succeeded", "failed"):
            session.add(
                TrainingRun(
                    status=status,
                    trigger="manual",
                    full_retrain=False,
                    sample_watermark=0,
                    progress=1.0,
                    epoch=1,
                    epochs=1,
                    attempts=1,
                    error=None,
                )
            )
        session.commit()
    runs = client.get("/v1/training-runs").json()
    assert [r["status"] for r in runs] == ["failed", "succeeded"]
    one = client.get(f"/v1/training-runs/{runs[1]['id']}").json()
    assert one["status"] == "succeeded"
    assert client.get("/v1/training-runs/999").json()["error"] == "training_run_not_found"
