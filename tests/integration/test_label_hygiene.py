"""Label hygiene and the gate's references through the API, on the real Postgres:

- an upload whose nearest NIST examples contradict its label (none of them carries it, and it
  sits deep among them) is stored as `suspect` with the reason in words, listed for an admin,
  kept out of the retrain count until confirmed; an honest new style is not;
- a suspect confirmed after a run counts toward the next one, whatever its age;
- trust comes from the key (a labeller's uploads are never suspect), never from `source`;
- a retrain with nothing new to learn from is refused (409 nothing_to_learn);
- an admin blesses a version as the label set's baseline.
"""

import numpy as np
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


def test_ones_labelled_seven_are_held_with_the_evidence_and_kept_out_of_the_count(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 1000)  # no run opens meanwhile
    replies = ones_labelled_seven(client, 20)
    suspects = [r for r in replies if r["status"] == "suspect"]
    # Many of them (those deep among NIST's 1s, I's and L's; bench/bench_evidence.py: 56% of
    # 300, these 20 are harder: 8 with the model bundled before issue 27's retraining, 5 with
    # today's); the gate and the healing are there for the others.
    assert len(suspects) >= 4, [r["suspect_reason"] for r in replies]
    for reply in suspects:
        assert reply["label"] == "7" and reply["model_label"] != "7"
        assert "contradicts the label" in reply["suspect_reason"]
        assert "'7'" in reply["suspect_reason"]
    # The same characters with their right label are accepted.
    right = [upload(client, p, c) for p, c in zip(*training_characters(20, 50, "1"), strict=True)]
    assert {r["status"] for r in right} == {"accepted"}

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


def test_a_new_style_with_right_labels_is_not_held(client: TestClient) -> None:
    # The old rule (the model's disbelief) held 77% of the rotated 3/4/7 the learning loop
    # uploads: the model reads a turned 7 as something else. Far from every NIST example, they
    # contradict nothing.
    replies = []
    for character in "347":
        images, labels = training_characters(10, 0, character)
        replies += [
            upload(client, np.rot90(p).copy(), c) for p, c in zip(images, labels, strict=True)
        ]
    held = [r for r in replies if r["status"] == "suspect"]
    assert len(held) <= 2, [r["suspect_reason"] for r in held]
    assert sum(r["model_label"] != r["label"] for r in replies) >= 15  # the model still disbelieves


def test_confirming_a_suspect_lets_it_train_and_can_start_the_retrain(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 1000)
    replies = ones_labelled_seven(client, 30, offset=100)
    training = [r for r in replies if r["status"] == "suspect" and not r["evaluation"]]
    counted = sum(r["status"] == "accepted" and not r["evaluation"] for r in replies)
    assert len(training) >= 3
    monkeypatch.setattr(get_settings(), "retrain_threshold", counted + 2)
    assert client.get("/v1/training-runs").json() == []  # suspects never count

    refused = client.post(f"/v1/samples/{training[0]['id']}/confirm")
    assert refused.status_code == 401
    for number, sample in enumerate(training[:2], start=1):
        reply = client.post(f"/v1/samples/{sample['id']}/confirm", headers=admin_headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "confirmed"
        runs = client.get("/v1/training-runs").json()
        # The confirmation that brings the training samples to the threshold opens the run.
        assert len(runs) == (1 if number == 2 else 0), (number, runs)
    assert runs[0]["trigger"] == "threshold"


def test_a_suspect_confirmed_after_a_run_counts_as_new_whatever_its_age(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    threshold = get_settings().retrain_threshold  # 5 in tests
    monkeypatch.setattr(get_settings(), "retrain_threshold", 1000)
    replies = ones_labelled_seven(client, 40, offset=400)
    monkeypatch.setattr(get_settings(), "retrain_threshold", threshold)
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


def test_a_labeller_relabels_a_held_sample_and_it_trains_under_its_right_label(
    client: TestClient, labeller_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 1000)
    held = next(r for r in ones_labelled_seven(client, 20, offset=700) if r["status"] == "suspect")
    refused = client.post(f"/v1/samples/{held['id']}/relabel", json={"label": "1"})
    assert refused.status_code == 401
    bad = client.post(
        f"/v1/samples/{held['id']}/relabel", json={"label": "€"}, headers=labeller_headers
    )
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_label"
    reply = client.post(
        f"/v1/samples/{held['id']}/relabel", json={"label": "1"}, headers=labeller_headers
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["label"], body["status"]) == ("1", "confirmed")
    assert "relabelled '1'" in body["suspect_reason"]


def test_trust_comes_from_the_key_never_from_the_form(
    client: TestClient, labeller_headers: dict[str, str]
) -> None:
    images, _ = training_characters(20, 200, character="1")
    # Anonymous, claiming to come from the page's board: still weighed against NIST.
    claimed = [upload(client, pixels, "7", source="canvas") for pixels in images[:10]]
    assert sum(r["status"] == "suspect" for r in claimed) >= 3
    assert not any(r["trusted"] for r in claimed)
    # A labeller's key: vouched for, never held.
    vouched = [upload(client, pixels, "7", headers=labeller_headers) for pixels in images[10:]]
    assert {r["status"] for r in vouched} == {"accepted"}
    assert all(r["trusted"] for r in vouched)
    assert all(r["model_label"] != "7" for r in vouched)  # the model's reading is still kept


def test_a_retrain_with_nothing_new_to_learn_is_refused(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 1000)
    refused = client.post("/v1/training-runs", headers=admin_headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "nothing_to_learn"
    assert "full_retrain" in refused.json()["detail"]
    # Suspects are nothing to learn from either, until confirmed (the uploads that were not
    # held are deleted again).
    replies = ones_labelled_seven(client, 10, offset=300)
    assert any(r["status"] == "suspect" for r in replies)
    for reply in replies:
        if reply["status"] != "suspect":
            client.delete(f"/v1/samples/{reply['id']}", headers=admin_headers)
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
