"""The learning loop end to end, with the compose commands run natively (see test_stack):
several uvicorn processes, a Celery worker, the real Postgres and Redis.

- Rollback through the API switches every API process, and no request fails meanwhile.
- Adaptation: a style of writing the bundled model gets wrong (NIST characters rotated a
  quarter turn), uploaded through the API by one client with their right labels; nearly none is
  held (far from every NIST example, they contradict nothing), nobody confirms anything; the
  upload that crosses the threshold starts the retrain, and the API then serves a model that
  reads unseen samples of that style far better, the gate having checked every NIST class
  against the baseline.
"""

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from core.config import Settings, get_settings
from core.labels import LabelSet
from testkit.images import png
from testkit.stack import free_port, wait_until
from tests.integration.conftest import ADMIN_TOKEN, add_model_version, wait_for
from tests.integration.test_stack import Stack, replace_option, running_stack
from tests.unit.test_compose import command_args

pytestmark = pytest.mark.timeout(420)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NEW_STYLE_CLASSES = "347"  # rotated, none of these reads as another class of the set


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def start_api(stack: Stack, env: dict[str, str] | None = None) -> httpx.Client:
    """The compose api command (several uvicorn workers) on a free port; ready to serve."""
    port = free_port()
    args = replace_option(command_args(stack.compose["services"]["api"]), "--host", "127.0.0.1")
    args = replace_option(args, "--port", str(port))
    stack.start("api", "api", args, env)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def ready() -> bool:
        stack.alive("api")
        try:
            return http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=60)
    return http


def predict_versions(http: httpx.Client, count: int) -> set[int]:
    """model_version of `count` predictions, each on a new connection (any API process)."""
    image = {"image": ("x.png", png(1, (28, 28)))}  # a stroke: a picture with ink
    seen = set()
    for _ in range(count):
        with httpx.Client(base_url=http.base_url, timeout=30) as fresh:
            reply = fresh.post("/v1/predictions", files=image)
            assert reply.status_code == 200, reply.text
            seen.add(reply.json()["model_version"])
    return seen


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    http = start_api(stack)
    yield http
    http.close()


def test_activate_and_rollback_reach_every_api_process_without_a_failed_request(
    stack: Stack,
    api: httpx.Client,
) -> None:
    assert predict_versions(api, 12) == {1}
    version = add_model_version()

    failures: list[str] = []
    stop = threading.Event()

    def keep_predicting() -> None:
        image = {"image": ("x.png", png(1, (28, 28)))}
        with httpx.Client(base_url=api.base_url, timeout=30) as http:
            while not stop.is_set():
                reply = http.post("/v1/predictions", files=image)
                if reply.status_code != 200:
                    failures.append(f"{reply.status_code} {reply.text}")

    load = [threading.Thread(target=keep_predicting) for _ in range(4)]
    for thread in load:
        thread.start()
    try:
        for target in (version, 1):  # forward, then roll back
            began = time.monotonic()
            reply = api.post(f"/v1/models/{target}/activate", headers=ADMIN)
            assert reply.status_code == 200, reply.text
            # Every process follows within its poll interval (MODEL_POLL_SECONDS=1 here;
            # the bound is 10 s). 16 fresh connections land on all 4 processes.
            wait_for(lambda t=target: predict_versions(api, 16) == {t}, timeout=10, interval=0.5)
            assert time.monotonic() - began < 10
    finally:
        stop.set()
        for thread in load:
            thread.join(timeout=30)
    assert failures == []
    assert {m["version"]: m["status"] for m in api.get("/v1/models").json()} == {
        1: "active",
        version: "retired",
    }


def test_uploads_of_a_new_style_teach_the_served_model(stack: Stack) -> None:
    from trainer.data import load_nist

    threshold = 60
    # The retrain itself with the production defaults (the suite's TEST_ENV shrinks them).
    env = {
        "RETRAIN_THRESHOLD": str(threshold),
        "RETRAIN_EPOCHS": str(Settings.model_fields["retrain_epochs"].default),
        "RETRAIN_NIST_SAMPLES": str(Settings.model_fields["retrain_nist_samples"].default),
        "EVALUATION_KEY": "new-style",  # the same uploads on each side every run: one verdict
    }
    http = start_api(stack, env)
    stack.start("worker", "worker", command_args(stack.compose["services"]["worker"]), env)

    labels = LabelSet(get_settings().labels)
    data = load_nist(get_settings().nist_data_dir, labels)
    rng = np.random.default_rng(0)
    classes = [labels.index(c) for c in NEW_STYLE_CLASSES]

    def new_style(x: np.ndarray, y: np.ndarray, per_class: int) -> tuple[list[bytes], list[str]]:
        images, truth = [], []
        for c in classes:
            for i in rng.choice(np.flatnonzero(y == c), per_class, replace=False):
                images.append(png_bytes(np.rot90(x[i]).copy()))  # a quarter turn
                truth.append(labels.characters[c])
        return images, truth

    # Unseen samples of the style (the test split), and uploads (from the training split).
    unseen, unseen_truth = new_style(data.x_test, data.y_test, 60)
    uploads, upload_labels = new_style(data.x_train, data.y_train, 30)

    def accuracy() -> tuple[float, int]:
        files = [("images", (f"{i}.png", b)) for i, b in enumerate(unseen)]
        reply = http.post("/v1/predictions/batch", files=files)
        assert reply.status_code == 200, reply.text
        batch = reply.json()
        right = [item["label"] == t for item, t in zip(batch["results"], unseen_truth, strict=True)]
        return float(np.mean(right)), batch["model_version"]

    before, version_before = accuracy()
    assert version_before == 1
    assert before < 0.5, f"the bundled model already reads the new style ({before:.0%})"

    # Upload in a random order, as one client, until the threshold is crossed. The bundled
    # model reads most of these wrong; the evidence (their nearest NIST examples) holds almost
    # none: a new style contradicts no established example.
    order = rng.permutation(len(uploads))
    counted, sent, held, crossed = 0, 0, 0, None
    for i in order:
        reply = http.post(
            "/v1/samples",
            files={"image": ("x.png", uploads[i])},
            data={"label": upload_labels[i], "source": "upload"},
        )
        assert reply.status_code == 201, reply.text
        sent += 1
        # Its side, as an admin sees it (the uploader is not told).
        sample = http.get(f"/v1/samples/{reply.json()['id']}", headers=ADMIN).json()
        if sample["status"] == "suspect":
            held += 1
        elif not sample["evaluation"]:
            counted += 1
        if counted == threshold:
            crossed = time.monotonic()
            break
    if crossed is None:
        pytest.fail(f"only {counted} training samples among {sent} uploads ({held} held)")
    print(f"\n{held} of {sent} new-style uploads were held as suspect")
    # The evidence holds about 5% of this style's uploads (bench_evidence, rotated 3/4/7, 300 a
    # row: 4.7% with the bundled model, 5.0% with the one before it); of the ~75 sent here
    # that is 2 to 7 by chance alone. More than 8% says the evidence now stands in the way of
    # honest new handwriting (at EVIDENCE_DEPTH 0.3 it held 7.7% of 300).
    assert held <= 0.08 * sent

    seen: list[dict] = []

    def finished_run() -> dict | None:
        stack.alive("worker", "api")
        seen[:] = http.get("/v1/training-runs").json()
        done = [r for r in seen if r["status"] in ("succeeded", "failed")]
        return done[0] if done else None

    try:
        run = wait_until(finished_run, 300, "the training run finishing", interval=1)
    except TimeoutError as exc:
        pytest.fail(f"{exc}; runs: {seen}\n{stack.logs()}")
    assert run["trigger"] == "threshold" and run["status"] == "succeeded", (run, stack.logs())
    assert run["decision"] == "promoted", run["decision_reason"]
    (promoted,) = [m for m in http.get("/v1/models").json() if m["status"] == "active"]
    assert promoted["version"] != 1 and promoted["training_run_id"] == run["id"]
    wait_for(lambda: accuracy()[1] == promoted["version"], timeout=10, interval=0.5)
    seconds_to_serving = time.monotonic() - crossed
    after, _ = accuracy()

    metrics = run["metrics"]
    candidate, active = metrics["candidate"], metrics["active"]
    print(
        f"\nnew style {NEW_STYLE_CLASSES!r} rotated: unseen accuracy {before:.1%} -> {after:.1%};"
        f" NIST test {active['test_accuracy']:.2%} -> {candidate['test_accuracy']:.2%};"
        f" {metrics['training_samples']} training samples x{metrics['sample_copies']};"
        f" threshold-crossing upload or confirmation to serving {seconds_to_serving:.0f} s"
    )
    assert after >= before + 0.2, f"{before:.1%} -> {after:.1%}"
    assert candidate["test_accuracy"] >= active["test_accuracy"] - 0.005
    # One client: half of each class's new samples trained, the rest wait for the next run.
    assert metrics["waiting_samples"] > 0
    assert len([r for r in http.get("/v1/training-runs").json()]) == 1  # exactly one run
    http.close()
