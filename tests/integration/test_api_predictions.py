"""/v1/predictions with the bundled model, through HTTP, on real NIST images."""

import base64
import io
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from core.config import get_settings
from testkit.images import encode, isoluminant, png, png_header_only
from testkit.nist import balanced_holdout
from testkit.stack import REPO_ROOT
from tests.integration.conftest import TEST_ENV


def test_known_nist_images_are_predicted_correctly(client: TestClient) -> None:
    images, labels = balanced_holdout(60)
    correct = 0
    for pixels, label in zip(images, labels, strict=True):
        reply = client.post(
            "/v1/predictions", files={"image": ("x.png", encode(Image.fromarray(pixels)))}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model_version"] == 1
        assert len(body["top"]) == 5
        assert body["top"][0]["label"] == body["label"]
        assert body["confidence"] == body["top"][0]["probability"]
        assert [c["probability"] for c in body["top"]] == sorted(
            (c["probability"] for c in body["top"]), reverse=True
        )
        assert set(body["timings"]) == {"decode_ms", "preprocess_ms", "inference_ms"}
        correct += body["label"] == label
    assert correct >= 48, f"{correct}/60 correct"  # the bundled model is ~90% on this holdout


@pytest.mark.parametrize(
    "side",
    [300, 1200],  # predicted on the event loop; in the thread pool (over INLINE_MAX_PIXELS)
)
def test_a_photo_of_dark_ink_on_paper_is_read_like_the_scan(client: TestClient, side: int) -> None:
    images, _ = balanced_holdout(40)
    agree = 0
    for pixels in images:
        scan = Image.fromarray(pixels)
        photo = ImageOps.invert(scan).resize((side, side), Image.Resampling.BICUBIC).convert("RGB")
        replies = [
            client.post("/v1/predictions", files={"image": ("x", encode(img, "JPEG"))}).json()
            for img in (scan.convert("RGB"), photo)
        ]
        agree += replies[0]["label"] == replies[1]["label"]
    assert agree >= 34, f"{agree}/40 agree"


def test_batch_answers_in_order_with_errors_for_bad_images(client: TestClient) -> None:
    images, labels = balanced_holdout(10)
    files = [("images", (f"{i}.png", encode(Image.fromarray(p)))) for i, p in enumerate(images)]
    files.insert(3, ("images", ("bad.png", b"not an image")))
    files.insert(6, ("images", ("bomb.png", png_header_only(50_000, 50_000))))
    reply = client.post("/v1/predictions/batch", files=files)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["index"] for r in results] == list(range(12))
    assert results[3]["error"] == "unsupported_image" and results[3]["label"] is None
    assert results[6]["error"] == "image_too_many_pixels"
    good = [r for r in results if r["error"] is None]
    assert [r["filename"] for r in good] == [f"{i}.png" for i in range(10)]
    assert sum(r["label"] == label for r, label in zip(good, labels, strict=True)) >= 7


def holdout_digits_and_lookalikes(count: int) -> tuple[list[np.ndarray], list[str]]:
    """Holdout digits, every one of them: a digit is sometimes read as its look-alike letter."""
    images, labels = balanced_holdout(2000)
    digits = [(p, c) for p, c in zip(images, labels, strict=True) if c.isdigit()][:count]
    return [p for p, _ in digits], [c for _, c in digits]


def test_a_client_that_knows_the_field_holds_digits_gets_a_digit(client: TestClient) -> None:
    images, labels = holdout_digits_and_lookalikes(150)
    free, digits_only = [], []
    for pixels in images:
        files = {"image": ("x.png", encode(Image.fromarray(pixels)))}
        free.append(client.post("/v1/predictions", files=files).json())
        reply = client.post("/v1/predictions", files=files, data={"labels": "9876543210"})
        assert reply.status_code == 200, reply.text
        digits_only.append(reply.json())
    for body in digits_only:
        assert body["allowed_labels"] == "0123456789"  # in the model's order
        assert body["label"].isdigit() and all(c["label"].isdigit() for c in body["top"])
        assert 0.5 < sum(c["probability"] for c in body["top"]) <= 1.0 + 1e-6  # 5 of 10
    assert all(body["allowed_labels"] is None for body in free)
    # A right answer stays right (the best digit is still the best); a letter becomes a digit.
    right_free = [b["label"] == c for b, c in zip(free, labels, strict=True)]
    right_digits = [b["label"] == c for b, c in zip(digits_only, labels, strict=True)]
    assert all(d for f, d in zip(right_free, right_digits, strict=True) if f)
    assert sum(right_digits) > sum(right_free), (sum(right_digits), sum(right_free))


def test_a_batch_takes_the_allowed_labels_too(client: TestClient) -> None:
    images, _ = holdout_digits_and_lookalikes(20)
    files = [("images", (f"{i}.png", encode(Image.fromarray(p)))) for i, p in enumerate(images)]
    reply = client.post("/v1/predictions/batch", files=files, data={"labels": "0123456789"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["allowed_labels"] == "0123456789"
    assert all(r["label"].isdigit() for r in reply.json()["results"])


@pytest.mark.parametrize("route", ["/v1/predictions", "/v1/predictions/batch"])
def test_labels_the_model_does_not_know_are_refused_by_name(client: TestClient, route: str) -> None:
    field = "image" if route == "/v1/predictions" else "images"
    files = {field: ("x.png", png(1, (28, 28)))}
    reply = client.post(route, files=files, data={"labels": "01c!"})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "invalid_labels"
    assert "'!'" in reply.json()["detail"]
    # Lowercase c is merged into C in these 47 classes: it stands for C, as an upload's label.
    merged = client.post(route, files=files, data={"labels": "01c"})
    assert merged.status_code == 200, merged.text
    assert merged.json()["allowed_labels"] == "01C"
    twice = client.post(route, files=files, data={"labels": ["01", "23"]})
    assert twice.status_code == 422 and twice.json()["error"] == "repeated_field"


def test_batch_over_the_limit_is_refused(client: TestClient) -> None:
    from core.config import get_settings

    limit = get_settings().max_batch_images
    files = [("images", (f"{i}.png", png(i, (8, 8)))) for i in range(limit + 1)]
    reply = client.post("/v1/predictions/batch", files=files)
    assert reply.status_code == 413
    assert reply.json()["error"] == "too_many_images"


def test_bad_image_is_a_4xx(client: TestClient) -> None:
    reply = client.post("/v1/predictions", files={"image": ("x.png", b"\x89PNG\r\n\x1a\nbroken")})
    assert reply.status_code == 422
    assert reply.json()["error"] == "undecodable_image"
    assert client.post("/v1/predictions").status_code == 422


BLANKS = {
    "black": Image.new("L", (50, 50), 0),
    "white": Image.new("L", (280, 280), 255),
    "transparent": Image.new("RGBA", (280, 280), (0, 0, 0, 0)),
    # Noise one pixel high: too thin for a character's box (it crashed the preprocessing).
    "a strip of noise": Image.fromarray(
        np.random.default_rng(3).integers(0, 256, (1, 50)).astype(np.uint8)
    ),
}


@pytest.mark.parametrize("kind", sorted(BLANKS))
def test_a_picture_without_ink_gets_no_character(client: TestClient, kind: str) -> None:
    blank = encode(BLANKS[kind])
    reply = client.post("/v1/predictions", files={"image": ("blank.png", blank)})
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "no_ink" and "no ink" in reply.json()["detail"]
    # In a batch, its own entry; the others are answered.
    character = encode(Image.fromarray(balanced_holdout(1)[0][0]))
    files = [("images", ("blank.png", blank)), ("images", ("c.png", character))]
    results = client.post("/v1/predictions/batch", files=files).json()["results"]
    assert results[0]["error"] == "no_ink" and results[0]["label"] is None
    assert results[1]["error"] is None and results[1]["label"]


def test_a_character_in_ink_of_the_papers_luminance_is_read_by_its_colour(
    client: TestClient,
) -> None:
    """Red ink on green paper of one luminance: flat in grey, a character in colour. It is
    read as the same character drawn black on white, not refused as having no ink."""
    images, _ = balanced_holdout(4)
    for glyph in images:
        big = cv2.resize(glyph, (112, 112), interpolation=cv2.INTER_LINEAR)
        coloured = cv2.imencode(".png", isoluminant(big))[1].tobytes()
        plain = cv2.imencode(".png", 255 - big)[1].tobytes()
        answers = [
            client.post("/v1/predictions", files={"image": ("c.png", data)})
            for data in (coloured, plain)
        ]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[0].json()["label"] == answers[1].json()["label"]


def test_include_input_returns_the_28x28_picture_the_model_saw(client: TestClient) -> None:
    images, _ = balanced_holdout(3)
    # The glyph drawn dark on white paper at 4x: the model sees it white on black, 28x28.
    paper = ImageOps.invert(Image.fromarray(images[2])).resize((112, 112))
    reply = client.post(
        "/v1/predictions", params={"include": "input"}, files={"image": ("x.png", encode(paper))}
    )
    assert reply.status_code == 200, reply.text
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply.json()["input"]))))
    assert seen.shape == (28, 28) and seen.dtype == np.uint8
    assert seen.max() == 255 and seen[0].max() < 64  # bright ink, dark border
    # Close to the NIST original (which is itself the model's kind of input).
    difference = np.abs(seen.astype(float) - images[2].astype(float)).mean()
    assert difference < 40, difference
    plain = client.post("/v1/predictions", files={"image": ("x.png", encode(paper))}).json()
    assert plain["input"] is None and plain["label"] == reply.json()["label"]
    wrong = client.post(
        "/v1/predictions", params={"include": "everything"}, files={"image": ("x.png", png(3))}
    )
    assert wrong.status_code == 422 and "include" in wrong.json()["detail"]


def decoded_png(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_the_heatmap_shows_where_the_model_looked(client: TestClient) -> None:
    images, _ = balanced_holdout(8)
    files = {"image": ("x.png", encode(Image.fromarray(images[5])))}
    reply = client.post(
        "/v1/predictions", params=[("include", "heatmap"), ("include", "input")], files=files
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    heat, seen = decoded_png(body["heatmap"]), decoded_png(body["input"])
    assert heat.shape == (28, 28) and heat.max() == 255  # scaled to its strongest point
    # Blanking empty paper (zeros) changes nothing: the heat lies on and around the ink, faint
    # edges included.
    near_ink = np.zeros(seen.shape, bool)
    for y, x in zip(*np.nonzero(seen > 0), strict=True):
        near_ink[max(0, y - 5) : y + 6, max(0, x - 5) : x + 6] = True
    assert heat[~near_ink].max(initial=0) == 0
    assert heat[seen > 64].mean() > 40
    plain = client.post("/v1/predictions", files=files).json()
    assert plain["heatmap"] is None and plain["label"] == body["label"]


def test_a_doubtful_answer_is_flagged_in_words(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = balanced_holdout(40)
    files = [("images", (f"{i}.png", encode(Image.fromarray(p)))) for i, p in enumerate(images)]
    results = client.post("/v1/predictions/batch", files=files).json()["results"]
    threshold = get_settings().low_confidence_threshold
    for item in results:  # the flag follows the served (calibrated) confidence
        assert item["low_confidence"] is (item["confidence"] < threshold)
        assert (item["doubt"] is not None) is item["low_confidence"]
    unsure = [item for item in results if item["low_confidence"]]
    assert unsure and unsure[0]["doubt"].startswith(f"Unsure: “{unsure[0]['label']}” is only")

    one = {"image": ("x.png", encode(Image.fromarray(images[0])))}
    monkeypatch.setattr(get_settings(), "low_confidence_threshold", 1.01)  # nothing is enough
    reply = client.post("/v1/predictions", files=one).json()
    assert reply["low_confidence"] is True and "check the answer" in reply["doubt"]
    monkeypatch.setattr(get_settings(), "low_confidence_threshold", 0.0)
    reply = client.post("/v1/predictions", files=one).json()
    assert reply["low_confidence"] is False and reply["doubt"] is None


def test_the_api_process_never_imports_tensorflow_the_trainer_or_the_worker() -> None:
    # A fresh interpreter: the test process itself may have imported TensorFlow for the trainer.
    # It predicts, starts a run through the admin route, then uploads past the threshold.
    script = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from api.main import app
        from testkit.images import png
        admin = {{"Authorization": "Bearer {TEST_ENV["ADMIN_TOKEN"]}"}}
        with TestClient(app) as client:
            reply = client.post("/v1/predictions", files={{"image": ("x.png", png(1))}})
            assert reply.status_code == 200, reply.text
            reply = client.post("/v1/predictions/batch", files=[("images", ("x.png", png(2)))])
            assert reply.status_code == 200, reply.text
            reply = client.post("/v1/training-runs", headers=admin, json={{"full_retrain": True}})
            assert reply.status_code == 201, reply.text
            for seed in range(12):
                files = {{"image": ("x.png", png(1000 + seed))}}
                reply = client.post("/v1/samples", files=files, data={{"label": "3"}})
                assert reply.status_code == 201, reply.text
            assert client.post("/v1/models/1/activate", headers=admin).status_code == 200
        top = ("tensorflow", "keras", "trainer", "worker")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in top)
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**TEST_ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_picture_rendered_for_training_is_what_the_api_feeds_the_model(
    client: TestClient,
) -> None:
    # No train/serve skew (issue 27): the glyph training stores for a rendered picture
    # (trainer/rendered.py) is, byte for byte, the 28x28 input the API gives the model for the
    # same file.
    from trainer.rendered import glyph_as_served, kinds, render_pictures

    images, _ = balanced_holdout(2)
    checked = 0
    for kind in kinds():
        for picture in render_pictures(images, kind, seed=5):
            reply = client.post(
                "/v1/predictions",
                params={"include": "input"},
                files={"image": ("picture", picture)},
            )
            assert reply.status_code == 200, (kind, reply.text)
            seen = decoded_png(reply.json()["input"])
            np.testing.assert_array_equal(seen, glyph_as_served(picture), err_msg=kind)
            checked += 1
    assert checked == 2 * len(kinds())
