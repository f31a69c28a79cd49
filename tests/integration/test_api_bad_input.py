"""Bad input gets a clear 4xx JSON error naming the problem, and nothing is stored."""

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import func, select

from core.config import get_settings
from core.images import DECODE_SIDE, Route, decode_image, read_header
from db.models import Sample
from db.session import get_sessionmaker
from testkit.images import encode, noise_png, png, png_header_only


def stored_count() -> int:
    with get_sessionmaker()() as session:
        return session.scalar(select(func.count()).select_from(Sample)) or 0


@pytest.fixture(autouse=True)
def nothing_stored_and_still_healthy(client: TestClient) -> Iterator[None]:
    yield
    assert stored_count() == 0
    assert client.get("/readyz").status_code == 200


def assert_error(reply: httpx.Response, status: int, code: str, mentions: str) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["error"] == code
    assert mentions.lower() in body["detail"].lower()
    return body


def post(client: TestClient, data: bytes, label: str = "7", name: str = "x.png") -> httpx.Response:
    return client.post(
        "/v1/samples", files={"image": (name, data, "image/png")}, data={"label": label}
    )


def test_empty_file(client: TestClient) -> None:
    body = assert_error(post(client, b""), 422, "empty_image", "empty")
    assert "image/png" in body["allowed_types"]


def test_a_picture_without_ink_is_no_sample(client: TestClient) -> None:
    assert_error(post(client, encode(Image.new("L", (280, 280), 255))), 422, "no_ink", "no ink")


def test_text_file_named_png(client: TestClient) -> None:
    body = assert_error(post(client, b"hello, not an image"), 415, "unsupported_image", "PNG")
    assert set(body["allowed_types"]) == {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/bmp",
        "image/gif",
    }


@pytest.mark.parametrize(
    "payload",
    [
        b"<svg xmlns='http://www.w3.org/2000/svg'><circle r='4'/></svg>",
        b"<!doctype html><html><script>alert(1)</script></html>",
    ],
)
def test_svg_and_html_are_not_images(client: TestClient, payload: bytes) -> None:
    assert_error(post(client, payload), 415, "unsupported_image", "not a PNG")


def test_truncated_png(client: TestClient) -> None:
    data = png(1, size=(200, 200))
    assert_error(post(client, data[: len(data) // 2]), 422, "undecodable_image", "decoded")


def test_truncated_jpeg(client: TestClient) -> None:
    from testkit.images import encode, stroke_image

    data = encode(stroke_image(2, (300, 300)).convert("RGB"), "JPEG")
    assert_error(post(client, data[: len(data) // 3]), 422, "undecodable_image", "JPEG")


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    body = assert_error(
        post(client, png_header_only(50_000, 50_000)), 413, "image_too_many_pixels", "pixels"
    )
    assert body["max_pixels"] == get_settings().max_image_pixels


def test_file_over_max_upload_bytes(client: TestClient) -> None:
    limit = get_settings().max_upload_bytes
    data = noise_png((300, 300))
    assert len(data) > limit
    body = assert_error(post(client, data), 413, "image_too_large", str(limit))
    assert body["max_bytes"] == limit


def test_request_body_over_the_cap_is_refused_before_it_is_read(client: TestClient) -> None:
    limit = get_settings().max_upload_bytes
    reply = client.post(
        "/v1/samples",
        content=b"x" * (limit + 200_000),
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    )
    assert_error(reply, 413, "request_too_large", "limit")


def test_streamed_body_without_length_is_cut_off_at_the_cap(client: TestClient) -> None:
    limit = get_settings().max_upload_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"y" * 10_000  # 1 MB in all, past the cap

    reply = client.post(
        "/v1/samples",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    )
    assert limit < 1_000_000
    assert_error(reply, 413, "request_too_large", "limit")


@pytest.mark.parametrize(
    ("label", "mentions"),
    [
        ("%", "not in the label set"),
        ("ab", "exactly one character"),
        ("😀", "not in the label set"),
        ("'; DROP TABLE samples; --", "exactly one character"),
        ("a" * 64, "exactly one character"),
    ],
)
def test_labels_outside_the_set_list_what_is_allowed(
    client: TestClient, label: str, mentions: str
) -> None:
    body = assert_error(post(client, png(3), label), 422, "invalid_label", mentions)
    assert body["allowed"] == list(get_settings().labels)


def test_very_long_label_field(client: TestClient) -> None:
    assert_error(post(client, png(4), "x" * 10_000), 422, "invalid_request", "label")


def test_missing_image(client: TestClient) -> None:
    reply = client.post("/v1/samples", data={"label": "7"})
    assert_error(reply, 422, "invalid_request", "image")


def test_missing_label(client: TestClient) -> None:
    reply = client.post("/v1/samples", files={"image": ("x.png", png(5), "image/png")})
    assert_error(reply, 422, "invalid_request", "label")


def test_empty_label(client: TestClient) -> None:
    assert_error(post(client, png(5), ""), 422, "invalid_request", "label")


def test_unknown_source(client: TestClient) -> None:
    reply = client.post(
        "/v1/samples",
        files={"image": ("x.png", png(6), "image/png")},
        data={"label": "7", "source": "robot"},
    )
    assert_error(reply, 422, "invalid_request", "source")


def test_not_multipart_at_all(client: TestClient) -> None:
    reply = client.post("/v1/samples", json={"label": "7"})
    assert_error(reply, 422, "invalid_request", "image")


def test_a_decode_is_costed_from_the_header_alone() -> None:
    # A bomb's cost must be known without decoding it: 2.5 gigapixels, counted not decoded.
    header = read_header(png_header_only(50_000, 50_000), "PNG")
    assert (header.width, header.height, header.route) == (50_000, 50_000, Route.GREY)
    assert header.decode_bytes() >= 2_500_000_000
    assert read_header(png(size=(40, 30)), "PNG").decode_bytes() >= 1200
    with pytest.raises(SyntaxError):
        read_header(png()[:20], "PNG")


def test_a_big_jpeg_is_decoded_no_bigger_than_preprocessing_needs() -> None:
    photo = Image.new("L", (4000, 3000), 230)
    ImageDraw.Draw(photo).line([(1500, 800), (2400, 2200)], fill=20, width=120)
    decoded = decode_image(encode(photo, "JPEG"), max_bytes=10**8, max_pixels=10**8)
    assert (decoded.width, decoded.height) == (4000, 3000)  # the picture's own size is stored
    assert DECODE_SIDE <= max(decoded.image.shape) < 2 * DECODE_SIDE  # 1/4 scale: 1000x750
    png = decode_image(encode(photo, "PNG"), max_bytes=10**8, max_pixels=10**8)
    assert png.image.shape[:2] == (3000, 4000)  # only JPEG decodes at a reduced scale
