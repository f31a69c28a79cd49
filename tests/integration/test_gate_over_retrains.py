"""The gate over many retrains and against bad labels, with real training (the production code
path, small settings from conftest's TEST_ENV):

- five retrains in a row with nothing useful to learn never take the served model below the
  baseline's allowance, even with an allowance wide enough to promote some of them;
- 30 clean `1`s uploaded as `7` among 100 good uploads are caught before training, and the
  served model reads clean `1`s no worse afterwards.
"""

import subprocess

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.config import get_settings
from db.models import RunStatus
from testkit.images import encode
from testkit.nist import balanced_holdout, training_characters
from tests.integration.conftest import ADMIN_TOKEN, wait_for
from tests.integration.test_training import open_manual_run, run_row, upload_nist
from worker.training import execute_run

pytestmark = pytest.mark.timeout(900)


def upload(client: TestClient, pixels: np.ndarray, label: str) -> dict:
    """Stored anonymously, read back as an admin sees it (with its side)."""
    reply = client.post(
        "/v1/samples",
        files={"image": ("x.png", encode(Image.fromarray(pixels)))},
        data={"label": label},
    )
    assert reply.status_code == 201, reply.text
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return client.get(f"/v1/samples/{reply.json()['id']}", headers=admin).json()


def test_five_retrains_in_a_row_stay_within_the_baseline_allowance(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowance = 0.02  # wide, so that the active-model check alone would let it slide
    monkeypatch.setattr(get_settings(), "gate_max_nist_drop", allowance)
    monkeypatch.setattr(get_settings(), "retrain_threshold", 10_000)  # runs opened here only
    served: list[tuple[str, float, float]] = []
    baseline = None
    for round_number in range(5):
        upload_nist(client, 2, offset=40 * round_number)  # nothing useful to learn
        run_id = open_manual_run()
        assert run_id is not None
        assert execute_run(run_id) == RunStatus.succeeded
        run = run_row(run_id)
        metrics = run.metrics or {}
        baseline = metrics["baseline"]
        assert metrics["baseline_version"] == 1
        checks = {check["name"] for check in metrics["gate"]}
        assert {"NIST test vs baseline", "NIST holdout vs baseline", "class"} <= checks
        active = metrics["candidate"] if run.decision == "promoted" else metrics["active"]
        served.append((str(run.decision), active["test_accuracy"], active["holdout_accuracy"]))
        print(f"\nrun {run_id}: {run.decision}: {run.decision_reason}")
    assert baseline is not None
    print(
        f"\nbaseline: test {baseline['test_accuracy']:.4f}, holdout "
        f"{baseline['holdout_accuracy']:.4f}; allowance {allowance}; five retrains: "
        + ", ".join(f"{d} -> test {t:.4f} holdout {h:.4f}" for d, t, h in served)
    )
    for _, test, holdout in served:
        assert test >= baseline["test_accuracy"] - allowance
        assert holdout >= baseline["holdout_accuracy"] - allowance


def ones_read_right(client: TestClient, images: np.ndarray) -> tuple[float, int]:
    """Share of clean `1`s (writers no model saw) the served model reads as `1`; its version."""
    files = [("images", (f"{i}.png", encode(Image.fromarray(p)))) for i, p in enumerate(images)]
    reply = client.post("/v1/predictions/batch", files=files)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    return float(np.mean([r["label"] == "1" for r in results])), reply.json()["model_version"]


def test_thirty_ones_labelled_seven_are_caught_before_training(
    client: TestClient,
    admin_headers: dict[str, str],
    celery_worker: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 10_000)  # the admin starts it
    holdout, characters = balanced_holdout(9120)
    clean_ones = holdout[[c == "1" for c in characters]]
    before, version_before = ones_read_right(client, clean_ones)

    good_images, good_labels = training_characters(100, offset=5000)
    poison_images, _ = training_characters(30, offset=0, character="1")
    uploads = [(p, c, False) for p, c in zip(good_images, good_labels, strict=True)]
    uploads += [(p, "7", True) for p in poison_images]
    order = np.random.default_rng(0).permutation(len(uploads))
    replies = [(upload(client, *uploads[i][:2]), uploads[i][2]) for i in order]
    flagged_poison = sum(r["status"] == "suspect" for r, poison in replies if poison)
    flagged_good = sum(r["status"] == "suspect" for r, poison in replies if not poison)
    training = sum(not r["evaluation"] and r["status"] != "suspect" for r, _ in replies)

    reply = client.post("/v1/training-runs", headers=admin_headers)
    assert reply.status_code == 201, reply.text
    run_id = reply.json()["id"]

    def finished() -> dict | None:
        run = client.get(f"/v1/training-runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    run = wait_for(finished, timeout=600, interval=2)
    assert run["status"] == "succeeded", run["error"]
    if run["decision"] == "promoted":  # the API follows within MODEL_POLL_SECONDS
        wait_for(lambda: ones_read_right(client, clean_ones[:1])[1] != version_before, 10)
    after, version_after = ones_read_right(client, clean_ones)
    (one_check,) = [c for c in run["metrics"]["gate"] if c["detail"].startswith("class '1'")]
    print(f"\nrun {run_id}: {run['decision']}: {run['decision_reason']}")
    print(
        f"\npoisoning: {flagged_poison}/30 mislabelled and {flagged_good}/100 good uploads "
        f"flagged suspect; {run['metrics']['training_samples']} samples trained; run "
        f"{run['decision']}; clean 1s read right (holdout, {len(clean_ones)} images): "
        f"{before:.1%} (v{version_before}) -> {after:.1%} (v{version_after}); NIST test '1': "
        f"{one_check['reference']:.4f} -> {one_check['candidate']:.4f}"
    )
    assert flagged_poison >= 27
    assert flagged_good <= 3
    assert run["metrics"]["training_samples"] == training  # no suspect trained
    assert after >= before - 0.03
