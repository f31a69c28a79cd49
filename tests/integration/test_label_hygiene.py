"""Label hygiene and the gate's references through the API, on the real Postgres:

- an upload whose label the serving model finds very unlikely while it is confident in another
  is stored as `suspect`, listed for an admin, kept out of the retrain count until confirmed;
- a suspect confirmed after a run counts toward the next one, whatever its age;
- trust comes from the key (a labeller's uploads are never suspect), never from `source`;
- a retrain with nothing new to learn from is refused (409 nothing_to_learn);
- an admin blesses a version as the label set's baseline.
"""

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.config import get_settings
from db.models import RunStatus, TrainingRun
from db.session import get_sessionmaker
from domain import runs as domain_runs
from testkit.images import encode
from testkit.nist import training_characters
from tests.integration.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def upload(
    client: TestClient,
    pixels,
    label: str,
    source: str = "upload",
    headers: dict[str, str] | None = None,
) -> dict:
    """Stored, and read back as an admin sees it (with its side: `evaluation`)."""
    reply = client.post(
        "/v1/samples",
        files={"image": ("x.png", encode(Image.fromarray(pixels)))},
        data={"label": label, "source": source},
        headers=headers,
    )
    assert reply.status_code == 201, reply.text
    return client.get(f"/v1/samples/{reply.json()['id']}", headers=ADMIN).json()


def ones_labelled_seven(client: TestClient, count: int, offset: int = 0) -> list[dict]:
    images, _ = training_characters(count, offset, character="1")
    return [upload(client, pixels, "7") for pixels in images]


def test_a_clean_one_labelled_seven_is_suspect_and_kept_out_of_the_count(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 1000)  # no run opens meanwhile
    replies = ones_labelled_seven(client, 10)
    suspects = [r for r in replies if r["status"] == "suspect"]
    assert len(suspects) >= 9, [(r["model_label"], r["model_probability"]) for r in replies]
    for reply in suspects:
        assert reply["label"] == "7" and reply["model_label"] != "7"
        assert reply["model_probability"] >= get_settings().suspect_min_other_probability
    # The same characters with their right label are accepted.
    right = [upload(client, p, c) for p, c in zip(*training_characters(10, 50, "1"), strict=True)]
    assert {r["status"] for r in right} == {"accepted"}
    # Every class equal a priori: about half of these `1`s are read as `I` or `L` (model card).
    assert sum(r["model_label"] == "1" for r in right) >= 5

    stats = client.get("/v1/samples/stats").json()
    assert stats["suspect"] == len(suspects)
    accepted_training = sum(
        not r["evaluation"] for r in right + replies if r["status"] != "suspect"
    )
    assert stats["new_since_last_training_run"] == accepted_training

    listed = client.get("/v1/samples", params={"status": "suspect"}).json()["items"]
    assert sorted(s["id"] for s in listed) == sorted(s["id"] for s in suspects)
    bad = client.get("/v1/samples", params={"status": "doubtful"})
    assert bad.status_code == 422 and "status" in bad.text


def test_confirming_a_suspect_lets_it_train_and_can_start_the_retrain(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    threshold = get_settings().retrain_threshold  # 5 in tests
    replies = ones_labelled_seven(client, 20, offset=100)
    training = [r for r in replies if r["status"] == "suspect" and not r["evaluation"]]
    # A `1` the model does not read confidently as another label is accepted, and counts.
    counted = sum(r["status"] == "accepted" and not r["evaluation"] for r in replies)
    needed = threshold - counted
    assert 1 <= needed <= len(training), (counted, len(training))
    assert client.get("/v1/training-runs").json() == []  # suspects never count

    refused = client.post(f"/v1/samples/{training[0]['id']}/confirm")
    assert refused.status_code == 401
    for number, sample in enumerate(training[:needed], start=1):
        reply = client.post(f"/v1/samples/{sample['id']}/confirm", headers=admin_headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "confirmed"
        runs = client.get("/v1/training-runs").json()
        # The confirmation that brings the training samples to the threshold opens the run.
        assert len(runs) == (1 if number == needed else 0), (number, runs)
    assert runs[0]["trigger"] == "threshold"


def test_a_suspect_confirmed_after_a_run_counts_as_new_whatever_its_age(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    threshold = get_settings().retrain_threshold  # 5 in tests
    replies = ones_labelled_seven(client, 20, offset=400)
    held = [r for r in replies if r["status"] == "suspect" and not r["evaluation"]]
    assert len(held) >= threshold
    # A run takes in every sample so far (its watermark is past the suspects) and ends.
    with get_sessionmaker()() as session:
        run_id = domain_runs.open_run(session, "manual", threshold=None)
        run = session.get(TrainingRun, run_id)
        assert run is not None and run.sample_watermark >= max(r["id"] for r in held)
        run.status = RunStatus.succeeded
        session.commit()
    assert client.get("/v1/samples/stats").json()["new_since_last_training_run"] == 0
    for number, sample in enumerate(held[:threshold], start=1):
        reply = client.post(f"/v1/samples/{sample['id']}/confirm", headers=admin_headers)
        assert reply.status_code == 200, reply.text
        stats = client.get("/v1/samples/stats").json()
        opened = [r for r in client.get("/v1/training-runs").json() if r["id"] != run_id]
        if number < threshold:
            assert stats["new_since_last_training_run"] == number
            assert opened == []
    # The confirmation that reaches the threshold opens the next run, though every one of
    # these samples is older than the last run's watermark.
    assert [r["trigger"] for r in opened] == ["threshold"]


def test_trust_comes_from_the_key_never_from_the_form(
    client: TestClient, labeller_headers: dict[str, str]
) -> None:
    images, _ = training_characters(6, 200, character="1")
    # Anonymous, claiming to come from the page's board: still judged by the model.
    claimed = [upload(client, pixels, "7", source="canvas") for pixels in images[:3]]
    assert sum(r["status"] == "suspect" for r in claimed) >= 2
    assert not any(r["trusted"] for r in claimed)
    # A labeller's key: vouched for, never held.
    vouched = [upload(client, pixels, "7", headers=labeller_headers) for pixels in images[3:]]
    assert {r["status"] for r in vouched} == {"accepted"}
    assert all(r["trusted"] for r in vouched)
    assert all(r["model_label"] != "7" for r in vouched)  # the model's reading is still kept


def test_a_retrain_with_nothing_new_to_learn_is_refused(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    refused = client.post("/v1/training-runs", headers=admin_headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "nothing_to_learn"
    assert "full_retrain" in refused.json()["detail"]
    # Suspects are nothing to learn from either, until confirmed.
    assert all(r["status"] == "suspect" for r in ones_labelled_seven(client, 3, offset=300)[:1])
    assert client.post("/v1/training-runs", headers=admin_headers).status_code == 409
    assert client.get("/v1/training-runs").json() == []
    # A full retrain from scratch is always allowed.
    full = client.post("/v1/training-runs", headers=admin_headers, json={"full_retrain": True})
    assert full.status_code == 201, full.text


def test_bless_makes_a_version_the_baseline(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    from tests.integration.conftest import add_model_version

    models = client.get("/v1/models").json()
    assert [(m["version"], m["baseline"]) for m in models] == [(1, True)]  # the bundled one
    version = add_model_version()
    assert client.post(f"/v1/models/{version}/bless").status_code == 401
    reply = client.post(f"/v1/models/{version}/bless", headers=admin_headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["baseline"] is True and reply.json()["blessed_at"]
    assert reply.json()["status"] == "candidate"  # blessing does not make it serve
    listed = {m["version"]: m["baseline"] for m in client.get("/v1/models").json()}
    assert listed == {version: True, 1: False}
    missing = client.post("/v1/models/999/bless", headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["error"] == "model_not_found"
