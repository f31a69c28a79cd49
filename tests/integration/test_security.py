"""Authorisation of admin routes, how stored images are served back, CORS, and the body cap
over a real socket (the API must refuse a huge body without reading it)."""

import hmac
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlalchemy import select as sql_select

from core.config import get_settings
from db.models import ApiKey, ModelVersion, Sample, TrainingRun
from db.session import get_sessionmaker
from domain import keys
from testkit.images import encode, png, stroke_image
from testkit.stack import REPO_ROOT, free_port, uvicorn_command
from tests.integration.conftest import (
    ADMIN_TOKEN,
    TEST_ENV,
    add_model_version,
    key_headers,
    start_test_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


# --- Admin routes ---------------------------------------------------------------------------


def admin_requests(client: TestClient) -> dict[str, Callable[[dict[str, str]], httpx.Response]]:
    """Each admin route, aimed at something that exists, so only authorisation can refuse it:
    a training sample (a retrain then has something to learn; about one upload in ten is kept
    for evaluation, by this database's random key, so pictures are sent until one is not)."""
    for seed in range(1, 60):
        reply = client.post(
            "/v1/samples", files={"image": ("x.png", png(seed), "image/png")}, data={"label": "7"}
        )
        assert reply.status_code == 201, reply.text
        sample_id = reply.json()["id"]
        with get_sessionmaker()() as session:  # its side, read where no token is checked
            stored = session.get(Sample, sample_id)
            assert stored is not None
            if not stored.evaluation:
                break
            session.delete(stored)  # one sample in all: what nothing_changed counts
            session.commit()
    version = add_model_version()
    return {
        "delete sample": lambda headers: client.delete(f"/v1/samples/{sample_id}", headers=headers),
        "confirm sample": lambda headers: client.post(
            f"/v1/samples/{sample_id}/confirm", headers=headers
        ),
        "activate model": lambda headers: client.post(
            f"/v1/models/{version}/activate", headers=headers
        ),
        "start training run": lambda headers: client.post(
            "/v1/training-runs", json={"full_retrain": False}, headers=headers
        ),
    }


def nothing_changed(client: TestClient) -> None:
    """The refused admin requests left the sample, the registry and the runs as they were."""
    assert client.get("/v1/samples/stats").json()["total"] == 1
    assert client.get("/v1/samples").json()["items"][0]["confirmed_at"] is None
    with get_sessionmaker()() as session:
        active = session.scalars(
            sql_select(ModelVersion.version).where(ModelVersion.status == "active")
        ).all()
        runs = session.scalar(sql_select(func.count()).select_from(TrainingRun))
    assert active == [1]
    assert runs == 0


ROUTES = ["delete sample", "confirm sample", "activate model", "start training run"]


def resolve(authorization: str) -> str:
    """`<role key>` becomes a real key's header: a new key with that role (revoked if said)."""
    if not authorization.startswith("<"):
        return authorization
    role = authorization.strip("<>").split()[-2]
    header = key_headers(role)["Authorization"]
    if "revoked" in authorization:
        with get_sessionmaker()() as session:
            newest = session.scalars(sql_select(ApiKey).order_by(ApiKey.id.desc())).first()
            assert newest is not None
            keys.revoke(session, newest)
            session.commit()
    return header


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("", 401, "unauthorized"),
        (f"Basic {ADMIN_TOKEN}", 401, "unauthorized"),  # the right secret, the wrong scheme
        ("Bearer", 401, "unauthorized"),
        ("Bearer wrong", 401, "invalid_key"),
        (f"Bearer {ADMIN_TOKEN[:-1]}", 401, "invalid_key"),  # all but the last character
        (f"Bearer {ADMIN_TOKEN}x", 401, "invalid_key"),
        (f"Bearer {ADMIN_TOKEN.upper()}", 401, "invalid_key"),
        ("Bearer hwk_0123456789ab_not-a-key-we-issued", 401, "invalid_key"),
        ("<client key>", 403, "forbidden"),
        ("<labeller key>", 403, "forbidden"),
        ("<revoked admin key>", 401, "key_revoked"),
    ],
    ids=[
        "none",
        "empty",
        "basic",
        "no-token",
        "wrong",
        "prefix",
        "longer",
        "case",
        "forged-key",
        "client",
        "labeller",
        "revoked",
    ],
)
def test_admin_routes_refuse_a_missing_or_wrong_token(
    client: TestClient, route: str, authorization: str | None, status: int, code: str
) -> None:
    if authorization == "<labeller key>" and route in ("delete sample", "confirm sample"):
        pytest.skip("labellers may confirm and delete samples")
    send = admin_requests(client)[route]
    reply = send({} if authorization is None else {"Authorization": resolve(authorization)})
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == code
    assert reply.json()["detail"]
    if status == 401:
        assert reply.headers["www-authenticate"] == "Bearer"
    nothing_changed(client)


@pytest.mark.parametrize("route", ROUTES)
def test_without_an_admin_token_only_admin_keys_open_admin_routes(
    client: TestClient, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = admin_requests(client)[route]
    monkeypatch.setattr(get_settings(), "admin_token", "")
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
        reply = send(headers)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"] in ("unauthorized", "invalid_key")
    nothing_changed(client)
    assert send(key_headers("admin")).status_code in (200, 201, 204)


def test_keys_are_created_listed_and_revoked_by_an_admin_only(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    body = {"name": "scanner app", "role": "client"}
    assert client.post("/v1/keys", json=body).status_code == 401
    assert client.post("/v1/keys", json=body, headers=key_headers("labeller")).status_code == 403
    made = client.post("/v1/keys", json=body, headers=admin_headers)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith(f"hwk_{made.json()['prefix']}_")
    listed = client.get("/v1/keys", headers=admin_headers).json()
    assert [(k["name"], k["role"]) for k in listed][-1] == ("scanner app", "client")
    assert all("key" not in k for k in listed)  # never shown again
    with get_sessionmaker()() as session:  # only its hash is stored
        row = session.get(ApiKey, made.json()["id"])
        assert row is not None and key not in (row.secret_sha256, row.prefix)
    mine = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/samples", headers=mine).status_code == 200
    bad = client.post("/v1/keys", json={"name": "x", "role": "root"}, headers=admin_headers)
    assert bad.status_code == 422
    revoked = client.delete(f"/v1/keys/{made.json()['id']}", headers=admin_headers)
    assert revoked.status_code == 204
    refused = client.get("/v1/samples", headers=mine)
    assert refused.status_code == 401 and refused.json()["error"] == "key_revoked"
    assert client.delete("/v1/keys/99999", headers=admin_headers).status_code == 404


def test_the_cli_creates_a_key_that_works(client: TestClient) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "api.manage", "keys", "create", "--name", "ops", "--role", "admin"],
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = made.stdout.strip()
    reply = client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 200, reply.text
    assert [k["name"] for k in reply.json()] == ["ops"]
    listed = subprocess.run(
        [sys.executable, "-m", "api.manage", "keys", "list"],
        env={**os.environ, **TEST_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "\tadmin\t" in listed.stdout and key not in listed.stdout


def test_the_token_is_compared_in_constant_time(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every token check goes through hmac.compare_digest, whose time does not depend on how
    much of the token matched. (Timing itself is not measured: on a shared 2-core machine the
    noise is far larger than a string comparison's difference.)"""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr("api.auth.hmac.compare_digest", spy)
    send = admin_requests(client)["activate model"]
    assert send({"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}).status_code == 401
    assert send(admin_headers).status_code == 200
    assert calls == [
        (ADMIN_TOKEN[:-1].encode(), ADMIN_TOKEN.encode()),
        (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()),
    ]


# --- Serving stored bytes -------------------------------------------------------------------


def gif_html_polyglot() -> bytes:
    """A valid GIF with an HTML document after its trailer: a browser that sniffed it could
    run the script; served as image/gif with nosniff it stays a picture."""
    return encode(stroke_image(3).convert("P"), "GIF") + b"<html><script>alert(1)</script></html>"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (gif_html_polyglot(), "image/gif"),
        (encode(stroke_image(4).convert("RGB"), "JPEG"), "image/jpeg"),
        (encode(stroke_image(5), "WEBP"), "image/webp"),
    ],
    ids=["gif+html", "jpeg", "webp"],
)
def test_images_are_served_with_their_stored_type_and_nosniff(
    client: TestClient, data: bytes, content_type: str
) -> None:
    # The client claims text/html; the server decides by the bytes and serves what it decided.
    reply = client.post(
        "/v1/samples", files={"image": ("x.html", data, "text/html")}, data={"label": "7"}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["content_type"] == content_type
    served = client.get(f"/v1/samples/{reply.json()['id']}/image")
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == content_type
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"].startswith("inline")
    assert ".html" not in served.headers["content-disposition"]


def test_model_download_is_an_attachment_with_nosniff(client: TestClient) -> None:
    served = client.get("/v1/models/1/onnx")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"].startswith("attachment")


# --- CORS -----------------------------------------------------------------------------------


def test_no_cors_headers_unless_configured(client: TestClient) -> None:
    assert get_settings().cors_origins == []
    origin = {"Origin": "https://elsewhere.example"}
    simple = client.get("/v1/samples/stats", headers=origin)
    assert simple.status_code == 200
    preflight = client.options(
        "/v1/samples",
        headers=origin
        | {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x"},
    )
    for reply in (simple, preflight):
        assert not [h for h in reply.headers if h.lower().startswith("access-control-")]


def test_cors_allows_only_the_configured_origins() -> None:
    # Middleware is fixed when the app is built: a fresh interpreter with CORS_ORIGINS set.
    script = textwrap.dedent(
        """
        import json
        from fastapi.testclient import TestClient
        from api.main import app
        replies = {}
        with TestClient(app) as client:
            for origin in ("https://app.example", "https://elsewhere.example"):
                reply = client.options(
                    "/v1/samples",
                    headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
                )
                simple = client.get("/v1/samples/stats", headers={"Origin": origin})
                replies[origin] = [
                    reply.headers.get("access-control-allow-origin"),
                    simple.headers.get("access-control-allow-origin"),
                ]
        print("REPLIES", json.dumps(replies))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**TEST_ENV, "PATH": "/usr/bin:/bin", "CORS_ORIGINS": '["https://app.example"]'},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("REPLIES "))
    replies = json.loads(line.removeprefix("REPLIES "))
    assert replies["https://app.example"] == ["https://app.example"] * 2
    assert replies["https://elsewhere.example"] == [None, None]


# --- The body cap, over a real socket -------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real uvicorn serving the app on a free port, against the session's test database."""
    port = free_port()
    log = Path(tmp_path_factory.mktemp("uvicorn")) / "api.log"
    process = start_test_process(uvicorn_command("api.main:app", port), log)

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=60)
    yield "127.0.0.1", port
    stop_process(process)


def read_reply(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict]:
    """The status and JSON body of the HTTP reply on `sock`, read until the body is complete."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(
        line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
    )
    length = int(headers.get("content-length", headers.get("Content-Length", "0")))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), json.loads(body)


def request_head(host: str, port: int, *headers: str) -> bytes:
    lines = [
        "POST /v1/samples HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: multipart/form-data; boundary=zzz",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


FILE_PART_HEAD = (
    b"--zzz\r\n"
    b'Content-Disposition: form-data; name="image"; filename="x.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


def chunked(data: bytes) -> bytes:
    """One chunk of a Transfer-Encoding: chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_declared_10_mb_body_is_refused_before_it_is_sent(server: tuple[str, int]) -> None:
    host, port = server
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(request_head(host, port, f"Content-Length: {TEN_MB}"))
        sock.sendall(FILE_PART_HEAD + b"x" * 1000)  # 1 kB of the 10 MB announced, then nothing
        started = time.monotonic()
        status, body = read_reply(sock, timeout=5)
    assert time.monotonic() - started < 2
    assert status == 413
    assert body["error"] == "request_too_large"
    assert body["limit_bytes"] == get_settings().max_upload_bytes + 64 * 1024


def test_chunked_10_mb_body_is_cut_off_at_the_cap(server: tuple[str, int]) -> None:
    host, port = server
    chunk = b"y" * 65536
    sent = 0
    with socket.create_connection(server, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.sendall(request_head(host, port, "Transfer-Encoding: chunked"))
        sock.sendall(chunked(FILE_PART_HEAD))  # a well-formed upload of an endless file
        replied = False
        while sent < TEN_MB:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                replied = True
                break
            assert writable, "the server neither reads nor answers"
            try:
                sock.sendall(chunked(chunk))
            except (BrokenPipeError, ConnectionResetError):
                replied = True  # it closed on us: the reply is waiting to be read
                break
            sent += len(chunk)
        assert replied, f"all {sent} bytes were read without a reply"
        status, body = read_reply(sock)
    assert status == 413, body
    assert body["error"] == "request_too_large"
    # What the server read before refusing: the cap, plus what sat in socket buffers.
    print(f"sent {sent} bytes before the 413")
    assert sent < TEN_MB / 2, sent


def test_the_server_is_healthy_after_the_refusals(server: tuple[str, int]) -> None:
    host, port = server
    assert httpx.get(f"http://{host}:{port}/healthz", timeout=5).status_code == 200
