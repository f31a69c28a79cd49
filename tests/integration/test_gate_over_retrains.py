"""The gate over many retrains and against bad labels, with real training (the production code
path, small settings from conftest's TEST_ENV):

- five retrains in a row with nothing useful to learn never take the served model below the
  baseline's allowance, even with an allowance wide enough to promote some of them;
- 30 clean `1`s uploaded as `7` among 100 good uploads: most are held by the evidence, and the
  served model reads clean `1`s no worse afterwards;
- three rounds of look-alike relabels (1 as I, 0 as O, 5 as S, 1 as 7) by one key among good
  uploads by another: every poisoned class reads unseen NIST characters no worse than 2 points
  below where it started (held by the evidence, healed, or refused by the gate).
"""

import hashlib
import subprocess

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

import trainer.evaluate
from core.config import get_settings
from db.models import ModelScores, ModelVersion, RunStatus
from db.session import get_sessionmaker
from domain import registry
from testkit.images import encode
from testkit.nist import balanced_holdout, holdout_digit, training_characters
from tests.integration.conftest import ADMIN_TOKEN, wait_for
from tests.integration.test_training import open_manual_run, run_row, upload_nist
from worker.training import execute_run

pytestmark = pytest.mark.timeout(900)


def upload(
    client: TestClient, pixels: np.ndarray, label: str, headers: dict[str, str] | None = None
) -> dict:
    """Stored (anonymously, or with a key), read back as an admin sees it (with its side)."""
    reply = client.post(
        "/v1/samples",
        files={"image": ("x.png", encode(Image.fromarray(pixels)))},
        data={"label": label},
        headers=headers,
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
    # The references' NIST scores are computed once per version and kept (the candidate's at
    # its registration): the models each run scores on the NIST test split (their ONNX's hash).
    scored: list[str] = []
    predict_sets = trainer.evaluate.predict_sets

    def counted(onnx: bytes, sets: dict) -> dict:
        scored.extend([hashlib.sha256(onnx).hexdigest()] if "test" in sets else [])
        return predict_sets(onnx, sets)

    monkeypatch.setattr(trainer.evaluate, "predict_sets", counted)
    served: list[tuple[str, float, float]] = []
    baseline = None
    for round_number in range(5):
        upload_nist(client, 2, offset=40 * round_number)  # nothing useful to learn
        run_id = open_manual_run()
        assert run_id is not None
        scored.clear()
        assert execute_run(run_id) == RunStatus.succeeded
        # The first run scores the bundled model (serving and baseline: once); later runs
        # only their candidate, whatever was promoted.
        with get_sessionmaker()() as session:
            candidate = session.scalar(select(func.max(ModelVersion.version)))
            candidate_onnx = session.get(ModelVersion, candidate).onnx_sha256
        references = [h for h in scored if h != candidate_onnx]
        assert len(references) == (1 if round_number == 0 else 0), references
        run = run_row(run_id)
        metrics = run.metrics or {}
        baseline = metrics["baseline"]
        assert metrics["baseline_version"] == 1
        checks = {check["name"] for check in metrics["gate"]}
        assert {"NIST test vs baseline", "NIST holdout vs baseline", "class vs baseline"} <= checks
        # No class of the test split significantly below the baseline, whatever was promoted.
        if run.decision == "promoted":
            assert all(c["passed"] for c in metrics["gate"] if c["name"] == "class vs baseline")
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
    with get_sessionmaker()() as session:  # the kept scores are what the runs compared
        kept = session.scalars(select(ModelScores).where(ModelScores.version == 1)).one()
        assert kept.sets["test"]["accuracy"] == baseline["test_accuracy"]
        assert len(kept.test_predicted) == kept.sets["test"]["images"]
        assert session.scalar(select(func.count()).select_from(ModelScores)) == 6  # v1 + five


def read_right(client: TestClient, images: np.ndarray, wanted: str = "1") -> tuple[float, int]:
    """Share of clean characters (writers no model saw) the served model reads as `wanted`;
    its version."""
    read, version = [], 0
    for start in range(0, len(images), 256):  # a batch's most
        files = [
            ("images", (f"{i}.png", encode(Image.fromarray(p))))
            for i, p in enumerate(images[start : start + 256])
        ]
        reply = client.post("/v1/predictions/batch", files=files)
        assert reply.status_code == 200, reply.text
        read += [r["label"] == wanted for r in reply.json()["results"]]
        version = reply.json()["model_version"]
    return float(np.mean(read)), version


def test_thirty_ones_labelled_seven_do_no_lasting_damage(
    client: TestClient,
    admin_headers: dict[str, str],
    celery_worker: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(get_settings(), "retrain_threshold", 10_000)  # the admin starts it
    # The same evaluation split each run: the verdict must not hang on the draw (which uploads
    # land on the evaluation side moved the clean 1s by 2-4 points between runs).
    monkeypatch.setattr(get_settings(), "evaluation_key", "thirty-ones")
    # Every `1` of the digits holdout (1,190): on the balanced holdout's 187 a retrain with no
    # poison at all moved them 2 points either way, the allowance itself.
    clean_ones = holdout_digit("1")
    before, version_before = read_right(client, clean_ones)

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
        wait_for(lambda: read_right(client, clean_ones[:1])[1] != version_before, 10)
    after, version_after = read_right(client, clean_ones)
    one_check = next(c for c in run["metrics"]["gate"] if c.get("label") == "1")
    print(f"\nrun {run_id}: {run['decision']}: {run['decision_reason']}")
    print(
        f"\npoisoning: {flagged_poison}/30 mislabelled and {flagged_good}/100 good uploads "
        f"flagged suspect; {run['metrics']['training_samples']} samples trained; run "
        f"{run['decision']}; clean 1s read right (holdout, {len(clean_ones)} images): "
        f"{before:.1%} (v{version_before}) -> {after:.1%} (v{version_after}); NIST test '1': "
        f"{one_check['reference']:.4f} -> {one_check['candidate']:.4f}"
    )
    # Held by the evidence: half the poison (16 at EVIDENCE_DEPTH 0.4; 11 at the 0.5 it had
    # before, which this fails; the cap, the gate and the healing see to the rest), and at
    # most 2% of the good uploads.
    assert flagged_poison >= 13
    assert flagged_good <= 2
    metrics = run["metrics"]
    waiting, healed = metrics["waiting_samples"], metrics["held_by_healing"]
    # One uploader: of each class's new samples, half train now and the rest wait.
    assert waiting > 0
    assert metrics["training_samples"] + waiting + len(healed) == training  # no suspect trained
    assert after >= before - 0.02


# Look-alike relabels an attacker might try, NIST itself mixing some of them (1/I, 0/O).
POISON_PAIRS = [("1", "I"), ("0", "O"), ("5", "S"), ("1", "7")]


def new_key(client: TestClient, admin_headers: dict[str, str], name: str) -> dict[str, str]:
    reply = client.post("/v1/keys", json={"name": name, "role": "client"}, headers=admin_headers)
    assert reply.status_code == 201, reply.text
    return {"Authorization": f"Bearer {reply.json()['key']}"}


def clean_characters(character: str) -> np.ndarray:
    """Unseen NIST images of `character`: a digit's from the digits holdout (about 1,200: a
    retrain without poison moved the balanced holdout's ~190 by 2 points either way, the
    allowance itself), a letter's from the balanced holdout."""
    if character.isdigit():
        return holdout_digit(character)
    images, characters = balanced_holdout(9120)
    return images[[c == character for c in characters]]


def test_three_rounds_of_look_alike_relabels_do_no_lasting_damage(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each round: 100 good uploads by a writer's key, and 10 of each look-alike relabel by an
    attacker's key; the admin starts the run. After three rounds, every poisoned class (1, 0, 5:
    their characters were sent as I, 7, O, S) reads unseen NIST characters no worse than 2
    points below where it started. The labels used (I, 7, O, S) are printed beside them."""
    settings = get_settings()
    monkeypatch.setattr(settings, "retrain_threshold", 10_000)  # runs opened here only
    monkeypatch.setattr(settings, "evaluation_key", "poison-rounds")  # the same split each run
    writer, attacker = (new_key(client, admin_headers, n) for n in ("writer", "attacker"))
    aimed = sorted({c for pair in POISON_PAIRS for c in pair})
    clean = {c: clean_characters(c) for c in aimed}
    before = {c: read_right(client, clean[c], c)[0] for c in aimed}
    held_poison = sent_poison = 0
    for round_number in range(3):
        images, labels = training_characters(100, offset=6000 + 100 * round_number)
        for pixels, label in zip(images, labels, strict=True):
            upload(client, pixels, label, writer)
        for pair, (character, label) in enumerate(POISON_PAIRS):
            # Far from the writer's characters, and other 1s for each pair that has them.
            offset = 2000 + 100 * pair + 10 * round_number
            poison, _ = training_characters(10, offset, character)
            replies = [upload(client, pixels, label, attacker) for pixels in poison]
            held_poison += sum(r["status"] == "suspect" for r in replies)
            sent_poison += len(replies)
        run_id = open_manual_run()
        assert run_id is not None
        assert execute_run(run_id) == RunStatus.succeeded
        run = run_row(run_id)
        metrics = run.metrics or {}
        print(
            f"\nround {round_number + 1}: run {run_id} {run.decision} "
            f"(attempts refused first: {len(metrics.get('attempts', []))}, held by healing: "
            f"{len(metrics.get('held_by_healing', []))}, waiting: "
            f"{metrics.get('waiting_samples')}): {run.decision_reason}"
        )
    # The API serves the last promoted version (it polls every MODEL_POLL_SECONDS).
    wait_for(lambda: read_right(client, clean["1"][:1])[1] == active_version(), 10)
    after = {c: read_right(client, clean[c], c)[0] for c in aimed}
    print(f"\npoison held by the evidence: {held_poison} of {sent_poison}")
    for c in aimed:
        print(f"class {c!r} on unseen NIST characters: {before[c]:.1%} -> {after[c]:.1%}")
    # The poisoned classes: those whose characters were sent under another label.
    poisoned = {character for character, _ in POISON_PAIRS}
    assert all(after[c] >= before[c] - 0.02 for c in poisoned), (before, after)


def active_version() -> int:
    with get_sessionmaker()() as session:
        serving = registry.active_version(session)
        assert serving is not None
        return serving.version


def test_a_refused_run_holds_the_uploads_that_pushed_a_class_over_and_trains_again(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many NIST 1s labelled 7 and 7s labelled 1, from three keys (so no cap stops them): the
    evidence holds some, the rest take a class down and the gate refuses the candidate; the run
    holds the uploads that pushed it (labelled as what the class's images are now read as,
    read as that class by the reference model), hardly any good upload, and trains again
    without them. The run shows both attempts."""
    settings = get_settings()
    monkeypatch.setattr(settings, "retrain_threshold", 10_000)  # the admin starts it
    monkeypatch.setattr(settings, "evaluation_key", "healing")  # the same split each run
    # The suite's retrain is tiny (3,000 NIST images, one epoch): uploads weigh half of it and
    # it runs three epochs, so that what got past the evidence does take a class down.
    monkeypatch.setattr(settings, "upload_share", 0.5)
    monkeypatch.setattr(settings, "retrain_epochs", 3)
    writer = new_key(client, admin_headers, "writer")
    images, labels = training_characters(100, offset=9000)
    good = [upload(client, p, c, writer)["id"] for p, c in zip(images, labels, strict=True)]
    poison_ids = []
    for k in range(3):
        # 1s as 7s and 7s as 1s: a swap, which no shift of the classes' frequencies undoes.
        attacker = new_key(client, admin_headers, f"attacker {k}")
        for character, label in (("1", "7"), ("7", "1")):
            shapes, _ = training_characters(50, offset=3000 + 50 * k, character=character)
            poison_ids += [upload(client, pixels, label, attacker)["id"] for pixels in shapes]
    run_id = open_manual_run()
    assert run_id is not None
    assert execute_run(run_id) == RunStatus.succeeded
    run = run_row(run_id)
    metrics = run.metrics or {}
    print(f"\nrun {run_id}: {run.decision}: {run.decision_reason}")
    [first] = metrics["attempts"]
    assert first["decision"] == "rejected" and "class '" in first["reason"]
    held = metrics["held_by_healing"]
    assert held == first["held"] and held
    # The poison, and at most 2 of the 100 good uploads (an honest 1 that the reference
    # model reads as another class that was lost is held too, for a labeller to confirm).
    assert set(held) <= set(poison_ids) | set(good)
    assert len(set(held) & set(good)) <= 2
    for sample_id in held:
        sample = client.get(f"/v1/samples/{sample_id}", headers=admin_headers).json()
        assert sample["status"] == "suspect"
        assert sample["suspect_reason"].startswith(f"held by training run {run_id}")
    assert run.decision_reason is not None and "trained a second time" in run.decision_reason
    trained = metrics["training_samples"]
    print(
        f"{len(set(held) & set(poison_ids))} of {len(poison_ids)} poisoned uploads and "
        f"{len(set(held) & set(good))} of {len(good)} good ones held by the healing; the second "
        f"attempt trained on {trained} samples"
    )
