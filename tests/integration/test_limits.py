"""What an anonymous client can cost (issue 28), against real uvicorn processes, Postgres and
Redis: a decode is budgeted in bytes before it starts, alone and in a batch; CPU work never
blocks the event loop; a client that spends its budget gets 429 with Retry-After, counted in
Redis across the API's processes; a reading is corrected once, all or nothing."""

import base64
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median
from threading import Event

import cv2
import httpx
import pytest
from sqlalchemy import func, select

from core.config import get_settings
from db.models import Reading, Sample
from db.session import get_sessionmaker
from testkit.images import flat_png, png
from testkit.rows import make_rows
from testkit.stack import Server, uvicorn_server
from tests.integration.conftest import TEST_ENV, key_headers

pytestmark = pytest.mark.timeout(240)

MB = 1024 * 1024
PRODUCTION_UPLOAD_LIMIT = str(5 * MB)  # the default: the tests' own 256 KiB would refuse first


def peak_memory(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def one_process() -> Iterator[Server]:
    """One uvicorn process: every request's memory is this process's."""
    env = {**TEST_ENV, "MAX_UPLOAD_BYTES": PRODUCTION_UPLOAD_LIMIT}
    with uvicorn_server("api.main:app", env, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The issue's picture: a 16-bit RGBA PNG of 7071x7071, flat colour, 0.4 MB on the wire,
    under the 50 MP limit; decoding it whole takes 400 MB at 8 bytes a pixel."""
    return flat_png(7071, 7071, bit_depth=16, colour_type=6)


def test_a_decode_bomb_is_refused_before_decoding_alone_and_in_a_batch_of_8(
    one_process: Server, bomb: bytes
) -> None:
    with httpx.Client(base_url=one_process.url, timeout=60) as http:
        assert http.post("/v1/predictions", files={"image": ("a.png", png(1))}).status_code == 200
        pid = one_process.worker_pids()[0]
        before = peak_memory(pid)

        started = time.monotonic()
        alone = http.post("/v1/predictions", files={"image": ("bomb.png", bomb)})
        alone_seconds = time.monotonic() - started
        assert alone.status_code == 413, alone.text
        body = alone.json()
        assert body["error"] == "image_too_large"
        limit = get_settings().max_decode_bytes
        assert body["max_decode_bytes"] == limit
        assert "16-bit RGBA PNG" in body["detail"] and str(limit) in body["detail"]

        started = time.monotonic()
        batch = http.post(
            "/v1/predictions/batch", files=[("images", (f"{i}.png", bomb)) for i in range(8)]
        )
        batch_seconds = time.monotonic() - started
        assert batch.status_code == 200, batch.text
        assert [r["error"] for r in batch.json()["results"]] == ["image_too_large"] * 8

        grown = peak_memory(pid) - before
    assert grown <= 300 * MB, f"the API process grew by {grown / MB:.0f} MB"
    assert alone_seconds < 5 and batch_seconds < 5, (alone_seconds, batch_seconds)


def test_big_pictures_within_the_budget_are_decoded_one_at_a_time_in_a_batch(
    one_process: Server,
) -> None:
    # 3800x3800 RGBA: 115 MB to decode, under the 128 MiB budget; a batch of 4 would need 460
    # MB held at once, decoded and reduced in turn it needs one picture's.
    big = flat_png(3800, 3800, bit_depth=8, colour_type=6)
    with httpx.Client(base_url=one_process.url, timeout=120) as http:
        assert http.post("/v1/predictions", files={"image": ("a.png", png(1))}).status_code == 200
        pid = one_process.worker_pids()[0]
        before = peak_memory(pid)
        # Flat colour: decoded and reduced in full, then found to hold no ink (no_ink, 422).
        alone = http.post("/v1/predictions", files={"image": ("big.png", big)})
        assert alone.status_code == 422 and alone.json()["error"] == "no_ink", alone.text
        batch = http.post(
            "/v1/predictions/batch", files=[("images", (f"{i}.png", big)) for i in range(4)]
        )
        assert batch.status_code == 200, batch.text
        assert [r["error"] for r in batch.json()["results"]] == ["no_ink"] * 4
        grown = peak_memory(pid) - before
    assert grown <= 300 * MB, f"the API process grew by {grown / MB:.0f} MB"


def test_health_stays_fast_while_eight_clients_ask_for_heat_maps(one_process: Server) -> None:
    stop = Event()
    served: list[int] = []

    def ask_for_heat_maps(seed: int) -> None:
        with httpx.Client(base_url=one_process.url, timeout=60) as http:
            while not stop.is_set():
                reply = http.post(
                    "/v1/predictions",
                    params={"include": "heatmap"},
                    files={"image": ("x.png", png(seed, size=(280, 280)))},
                )
                assert reply.status_code == 200, reply.text
                assert reply.json()["heatmap"]
                served.append(seed)

    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=one_process.url) as http:
        clients = [pool.submit(ask_for_heat_maps, seed) for seed in range(8)]
        time.sleep(2)  # every client busy
        health = []
        for _ in range(40):
            started = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.05)
        stop.set()
        for client in clients:
            client.result(timeout=60)
    assert len(served) >= 40, "the heat maps were not being served meanwhile"
    assert median(health) < 0.05, f"/healthz p50 {median(health) * 1000:.0f} ms"


@pytest.fixture
def limited() -> Iterator[Server]:
    """Two API processes with small budgets, counting in Redis under a prefix of their own."""
    env = {
        **TEST_ENV,
        "TASK_QUEUE": f"{TEST_ENV['TASK_QUEUE']}-limits-{uuid.uuid4().hex[:6]}",
        "RATE_LIMIT_CPU_ANONYMOUS": "300/minute",  # CPU milliseconds
        "RATE_LIMIT_CPU_CLIENT": "100000/minute",
        "RATE_LIMIT_STORAGE_CLIENT": "6/minute",  # kilobytes
    }
    with uvicorn_server("api.main:app", env, workers=2) as running:
        yield running


def test_a_client_that_spends_its_budget_gets_429_in_every_api_process(limited: Server) -> None:
    heat_map = {"include": "heatmap"}
    picture = {"image": ("x.png", png(3, size=(280, 280)))}
    with httpx.Client(base_url=limited.url, timeout=60) as http:
        replies = []
        for _ in range(200):  # a heat map costs tens of CPU ms: 300 ms go in a few
            reply = http.post("/v1/predictions", params=heat_map, files=picture)
            replies.append(reply)
            if reply.status_code == 429:
                break
        refused = replies[-1]
        assert refused.status_code == 429, "the budget was never spent"
        assert 2 <= len(replies) < 200
        assert refused.json()["error"] == "rate_limited"
        assert refused.json()["limit"] == "300 per 1 minute"
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 60 and refused.json()["retry_after"] == retry
        # Counted in Redis: whichever of the two processes answers, the budget is spent.
        again = [http.post("/v1/predictions", files=picture).status_code for _ in range(10)]
        assert again == [429] * 10
        assert http.get("/healthz").status_code == 200  # cheap routes are not metered
        # A key has a budget of its own; a labeller's key none.
        for role in ("client", "labeller"):
            mine = http.post("/v1/predictions", files=picture, headers=key_headers(role))
            assert mine.status_code == 200, (role, mine.text)


def test_a_client_key_that_stores_its_budget_of_bytes_gets_429(limited: Server) -> None:
    headers = key_headers("client")
    with httpx.Client(base_url=limited.url, timeout=60, headers=headers) as http:
        statuses = []
        for seed in range(20):  # about 2 kB a picture against 6 kB a minute
            reply = http.post(
                "/v1/samples", files={"image": ("x.png", png(seed))}, data={"label": "7"}
            )
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                assert reply.json()["limit"] == "6 per 1 minute"
                break
    assert statuses[0] == 201 and statuses[-1] == 429, statuses
    with get_sessionmaker()() as session:
        stored = session.scalar(select(func.count()).select_from(Sample))
    assert stored == len(statuses) - 1  # the refused one stored nothing


# --- A reading is corrected once, all or nothing ------------------------------------------


@pytest.fixture
def two_processes() -> Iterator[Server]:
    with uvicorn_server("api.main:app", TEST_ENV, workers=2) as running:
        yield running


def row_reading(http: httpx.Client, seed: int) -> tuple[dict, str]:
    """A reading of a row and a correction of it that changes at least two characters."""
    row = make_rows(1, kind="canvas", seed=seed)[0]
    image = cv2.imencode(".png", row.image)[1].tobytes()
    reply = http.post(
        "/v1/readings",
        files={"image": ("row.png", image)},
        data={"expected_length": str(len(row.text))},
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    read = body["text"].replace(" ", "")
    text = "".join(("4" if c != "4" else "7") if i < 2 else c for i, c in enumerate(read))
    return body, text


def samples_of(reading_id: int) -> int:
    with get_sessionmaker()() as session:
        query = select(func.count()).where(Sample.reading_id == reading_id)
        return session.scalar(query) or 0


def test_eight_simultaneous_corrections_of_one_reading_store_one(two_processes: Server) -> None:
    with httpx.Client(base_url=two_processes.url, timeout=60) as http:
        body, text = row_reading(http, seed=31)

        def correct(_: int) -> httpx.Response:
            return http.post(f"/v1/readings/{body['id']}/correction", json={"text": text})

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(correct, range(8)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 7, [r.text for r in replies]
    assert {r.json()["error"] for r in replies if r.status_code == 409} == {"already_corrected"}
    [applied] = [r.json() for r in replies if r.status_code == 200]
    assert samples_of(body["id"]) == len(applied["corrected"]) >= 2


def test_a_correction_that_fails_at_its_second_character_stores_nothing(
    two_processes: Server,
) -> None:
    with httpx.Client(base_url=two_processes.url, timeout=60) as http:
        body, text = row_reading(http, seed=37)
        with get_sessionmaker()() as session:
            reading = session.get(Reading, body["id"])
            assert reading is not None
            second_crop = reading.crops[1]
        # The second character's picture is already stored under another label.
        other = "1" if text[1] != "1" else "2"
        stored = http.post(
            "/v1/samples",
            files={"image": ("c.png", base64.b64decode(second_crop))},
            data={"label": other},
        )
        assert stored.status_code == 201, stored.text
        reply = http.post(f"/v1/readings/{body['id']}/correction", json={"text": text})
        assert reply.status_code == 409, reply.text
        assert reply.json()["error"] == "label_conflict"
        assert samples_of(body["id"]) == 0  # not even the first character
        assert http.get(f"/v1/readings/{body['id']}").json()["corrected_text"] is None
