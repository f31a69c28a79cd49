"""A corpus of hostile and unusual uploads, sent to both POST /v1/samples and /v1/predictions.

Refused input gets a 4xx JSON error `{"error", "detail"}` naming the problem, stores nothing
(the total of GET /v1/samples/stats is unchanged) and leaves the service healthy. Unusual but
valid images (16-bit, CMYK, EXIF-rotated, animated) are accepted and read the way a person
sees them. tests/test_api_bad_input.py already sends the first refusals below (and the bad
labels) to /v1/samples; here they go to /v1/predictions, and the newer cases to both.
"""

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.config import get_settings
from testkit.images import (
    encode,
    jpeg_with_orientation,
    png,
    png_header_only,
    png_of_exactly,
    stroke_image,
)
from testkit.nist import balanced_holdout

SAMPLES = "/v1/samples"
PREDICTIONS = "/v1/predictions"
BOTH = (SAMPLES, PREDICTIONS)
LIMIT = get_settings().max_upload_bytes
FilePart = tuple[str, tuple[str, bytes, str]]


@dataclass(frozen=True)
class Hostile:
    """One hostile request: its multipart files and form fields, and the refusal it must get."""

    name: str
    files: list[FilePart]
    status: int
    code: str
    mentions: str
    endpoints: tuple[str, ...] = BOTH
    fields: dict[str, str] = field(default_factory=dict)


def image_part(data: bytes, filename: str = "x.png", content_type: str = "image/png") -> FilePart:
    return ("image", (filename, data, content_type))


def truncated_png() -> bytes:
    data = png(1, size=(200, 200))
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = encode(stroke_image(2, (300, 300)).convert("RGB"), "JPEG")
    return data[: len(data) // 3]


SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><circle r='4'/></svg>"
HTML = b"<!doctype html><html><script>alert(1)</script></html>"

CORPUS = [
    # Sent to /v1/samples by tests/test_api_bad_input.py already.
    Hostile("zero bytes", [image_part(b"")], 422, "empty_image", "empty", (PREDICTIONS,)),
    Hostile(
        "truncated PNG",
        [image_part(truncated_png())],
        422,
        "undecodable_image",
        "PNG image could not be decoded",
        (PREDICTIONS,),
    ),
    Hostile(
        "truncated JPEG",
        [image_part(truncated_jpeg(), "x.jpg", "image/jpeg")],
        422,
        "undecodable_image",
        "JPEG image could not be decoded",
        (PREDICTIONS,),
    ),
    Hostile(
        "text named .png",
        [image_part(b"hello, not an image")],
        415,
        "unsupported_image",
        "not a PNG",
        (PREDICTIONS,),
    ),
    Hostile(
        "SVG",
        [image_part(SVG, "x.svg", "image/svg+xml")],
        415,
        "unsupported_image",
        "not a PNG",
        (PREDICTIONS,),
    ),
    Hostile(
        "HTML",
        [image_part(HTML, "x.html", "text/html")],
        415,
        "unsupported_image",
        "not a PNG",
        (PREDICTIONS,),
    ),
    Hostile(
        "PNG header claiming 50,000 x 50,000 pixels",
        [image_part(png_header_only(50_000, 50_000))],
        413,
        "image_too_many_pixels",
        f"the limit is {get_settings().max_image_pixels} pixels",
        (PREDICTIONS,),
    ),
    Hostile("no file", [], 422, "invalid_request", "image", (PREDICTIONS,)),
    # New for both routes.
    Hostile(
        "one byte over MAX_UPLOAD_BYTES",
        [image_part(png_of_exactly(LIMIT + 1))],
        413,
        "image_too_large",
        f"the limit is {LIMIT} bytes",
    ),
    Hostile(
        "two files in the image field",
        [image_part(png(10)), image_part(png(11))],
        422,
        "repeated_field",
        "'image' was sent 2 times",
    ),
    Hostile(
        "a 100 kB file name",
        [image_part(png(12), filename="a" * 100_000 + ".png")],
        400,
        "http_error",
        "multipart",
    ),
    Hostile(
        "a 1 MB form field",
        [image_part(png(13))],
        413,
        "request_too_large",
        "over the limit",
        fields={"comment": "x" * 1_000_000},
    ),
    # /v1/samples only: its label and source fields.
    Hostile(
        "a 1 MB label",
        [image_part(png(14))],
        413,
        "request_too_large",
        "over the limit",
        (SAMPLES,),
        {"label": "7" * 1_000_000},
    ),
    Hostile(
        "a 1 MB source",
        [image_part(png(15))],
        413,
        "request_too_large",
        "over the limit",
        (SAMPLES,),
        {"label": "7", "source": "upload" * 200_000},
    ),
    Hostile(
        "a 100 kB label, under the body cap",
        [image_part(png(16))],
        422,
        "invalid_request",
        "label: String should have at most 64 characters",
        (SAMPLES,),
        {"label": "7" * 100_000},
    ),
    Hostile(
        "two labels",
        [image_part(png(17))],
        422,
        "repeated_field",
        "'label' was sent 2 times",
        (SAMPLES,),
        {"label": ["7", "8"]},  # type: ignore[dict-item]  # httpx sends a list as repeats
    ),
]


def stats_total(client: TestClient) -> int:
    reply = client.get("/v1/samples/stats")
    assert reply.status_code == 200, reply.text
    return reply.json()["total"]


def send(
    client: TestClient, endpoint: str, files: list[FilePart], fields: dict[str, str] | None = None
) -> httpx.Response:
    """POST a multipart form; /v1/samples gets a valid label unless the case sets its own."""
    form: dict[str, str] = {"label": "7"} if endpoint == SAMPLES else {}
    form.update(fields or {})
    if not files:  # still multipart, with only the form fields (or none)
        return client.post(endpoint, data=form or None, files={"other": ("", b"", "text/plain")})
    return client.post(endpoint, files=files, data=form)


@pytest.fixture
def unchanged_and_healthy(client: TestClient) -> Iterator[None]:
    """Nothing stored by the test, and the service still alive after it."""
    before = stats_total(client)
    yield
    assert stats_total(client) == before
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "case"),
    [(endpoint, case) for case in CORPUS for endpoint in case.endpoints],
    ids=lambda value: value.name if isinstance(value, Hostile) else value,
)
def test_hostile_upload_is_refused_with_a_json_error_naming_it(
    client: TestClient, unchanged_and_healthy: None, endpoint: str, case: Hostile
) -> None:
    reply = send(client, endpoint, case.files, case.fields)
    assert reply.status_code == case.status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["error"] == case.code, body
    assert case.mentions.lower() in body["detail"].lower(), body["detail"]


def test_refusals_store_nothing_even_after_a_valid_upload(client: TestClient) -> None:
    # The fixture above compares totals that start at 0; here one row is already stored.
    assert send(client, SAMPLES, [image_part(png(20))]).status_code == 201
    for case in CORPUS:
        if SAMPLES in case.endpoints:
            assert send(client, SAMPLES, case.files, case.fields).status_code == case.status
    assert stats_total(client) == 1
    assert client.get("/healthz").status_code == 200


def predict(client: TestClient, data: bytes, filename: str = "x.png") -> dict:
    reply = client.post(PREDICTIONS, files={"image": (filename, data, "application/octet-stream")})
    assert reply.status_code == 200, reply.text
    return reply.json()


def store(client: TestClient, data: bytes, label: str = "7") -> dict:
    reply = client.post(SAMPLES, files={"image": ("x", data, "image/png")}, data={"label": label})
    assert reply.status_code == 201, reply.text
    return reply.json()


def probabilities(prediction: dict) -> dict[str, float]:
    return {c["label"]: c["probability"] for c in prediction["top"]}


def test_exactly_at_the_limit_is_accepted(client: TestClient) -> None:
    data = png_of_exactly(LIMIT, seed=30)
    assert len(data) == LIMIT
    assert store(client, data)["content_type"] == "image/png"
    assert predict(client, data)["label"]


def nist_image(index: int) -> tuple[Image.Image, str]:
    """A real handwritten character, 4x enlarged (so JPEG artefacts stay small), and its label."""
    images, labels = balanced_holdout(index + 1)
    image = Image.fromarray(images[index]).resize((112, 112), Image.Resampling.BICUBIC)
    return image, labels[index]


def test_16_bit_png_is_accepted_and_read_like_its_8_bit_copy(client: TestClient) -> None:
    image, _ = nist_image(0)
    eight = np.asarray(image, dtype=np.uint16)
    sixteen = Image.fromarray(eight * 257)  # 255 -> 65535: the same picture, 16 bits deep
    data = encode(sixteen, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    stored = store(client, data)
    assert (stored["width"], stored["height"], stored["content_type"]) == (112, 112, "image/png")
    deep, plain = predict(client, data), predict(client, encode(image, "PNG"))
    assert deep["label"] == plain["label"]
    assert deep["confidence"] == pytest.approx(plain["confidence"], abs=0.02)


def test_cmyk_jpeg_is_accepted(client: TestClient) -> None:
    image, _ = nist_image(1)
    data = encode(image.convert("RGB").convert("CMYK"), "JPEG", quality=95)
    stored = store(client, data, "3")
    assert stored["content_type"] == "image/jpeg"
    cmyk = predict(client, data)
    rgb = predict(client, encode(image.convert("RGB"), "JPEG", quality=95))
    assert cmyk["label"] == rgb["label"]


@pytest.mark.parametrize("orientation", [6, 8, 3])
@pytest.mark.parametrize("scale", [1, 10])  # 10: a big JPEG, decoded at a reduced scale
def test_exif_rotation_is_honoured(client: TestClient, orientation: int, scale: int) -> None:
    character, _ = nist_image(2)
    upright = Image.new("L", (180, 112), 0)  # wider than tall: a quarter turn shows in the size
    upright.paste(character, (34, 0))
    upright = upright.resize((180 * scale, 112 * scale), Image.Resampling.BICUBIC)
    data = jpeg_with_orientation(upright, orientation)
    stored = store(client, data)
    assert (stored["width"], stored["height"]) == (180 * scale, 112 * scale)
    turned = predict(client, data)
    straight = predict(client, encode(upright.convert("RGB"), "JPEG", quality=100))
    assert turned["label"] == straight["label"]
    assert turned["confidence"] == pytest.approx(straight["confidence"], abs=0.02)


def test_animated_gif_is_read_by_its_first_frame(client: TestClient) -> None:
    images, labels = balanced_holdout(40)
    # Two frames of different characters that the model reads confidently apart.
    first = Image.fromarray(images[0])
    second_index = next(i for i, label in enumerate(labels) if label != labels[0])
    second = Image.fromarray(images[second_index])
    animated = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(animated)).n_frames == 2
    reply = predict(client, animated)
    alone_first = predict(client, encode(first, "GIF"))
    alone_second = predict(client, encode(second, "GIF"))
    assert alone_first["label"] != alone_second["label"]
    assert reply["label"] == alone_first["label"]
    assert probabilities(reply) == pytest.approx(probabilities(alone_first), abs=1e-6)
    assert store(client, animated)["content_type"] == "image/gif"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/samples/9223372036854775808",  # one past Postgres' BIGINT
        "/v1/samples/9223372036854775808/image",
        "/v1/training-runs/9223372036854775808",
        "/v1/models/2147483648",  # one past INTEGER
        "/v1/models/2147483648/onnx",
        "/v1/samples/0",
    ],
)
def test_ids_outside_the_database_range_are_422_not_500(
    client: TestClient, unchanged_and_healthy: None, path: str
) -> None:
    reply = client.get(path)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "invalid_request"


def test_a_forged_cursor_past_bigint_is_400(
    client: TestClient, unchanged_and_healthy: None
) -> None:
    cursor = base64.urlsafe_b64encode(b"id:99999999999999999999").decode()
    reply = client.get("/v1/samples", params={"cursor": cursor})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_cursor"
