"""The HTTP side of scripts/compose-smoke.sh: talks to the stack through its published port.

Standard library only (it runs with the host's python3, outside the project's venv):

    python3 scripts/compose_smoke.py URL wait-ready [--timeout S]
    python3 scripts/compose_smoke.py URL upload --nist DIR --count N [--offset K]
    python3 scripts/compose_smoke.py URL predict --nist DIR --count N   # prints the version
    python3 scripts/compose_smoke.py URL retrain --token T [--timeout S]  # prints the version
    python3 scripts/compose_smoke.py URL counts                          # samples and models
    python3 scripts/compose_smoke.py URL metrics
    python3 scripts/compose_smoke.py URL prometheus-targets --job api --expect N
    python3 scripts/compose_smoke.py URL http-ok --path /healthcheck

Images are real EMNIST digits from NIST_SOURCE's emnist/emnist-mnist-test files (the pool,
never emnist-holdout/), sent as PNG files. Every failure exits non-zero with the reason.
"""

import argparse
import gzip
import json
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

SIDE = 28
DIGITS_IMAGES = "emnist/emnist-mnist-test-images-idx3-ubyte.gz"
DIGITS_LABELS = "emnist/emnist-mnist-test-labels-idx1-ubyte.gz"


class SmokeError(Exception):
    """The stack did not do what the smoke test expects."""


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def json_request(url: str, method: str = "GET", **kwargs: Any) -> Any:
    status, body = request(url, method, **kwargs)
    if status >= 300:
        raise SmokeError(f"{method} {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def png(pixels: bytes, width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG file."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data)
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + pixels[r * width : (r + 1) * width] for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def nist_digits(nist: Path, offset: int, count: int) -> list[tuple[bytes, str]]:
    """(PNG, label) of EMNIST-MNIST test images offset..offset+count, upright."""
    images = gzip.decompress((nist / DIGITS_IMAGES).read_bytes())[16:]
    labels = gzip.decompress((nist / DIGITS_LABELS).read_bytes())[8:]
    size = SIDE * SIDE
    found = []
    for index in range(offset, offset + count):
        stored = images[index * size : (index + 1) * size]  # transposed, as NIST stores them
        upright = bytes(stored[c * SIDE + r] for r in range(SIDE) for c in range(SIDE))
        found.append((png(upright, SIDE, SIDE), str(labels[index])))
    return found


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="c.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = request(f"{url}/readyz", timeout=5)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as error:  # refused, reset, timeout: the proxy or API is still starting
            last = repr(error)
        time.sleep(2)
    raise SmokeError(f"{url}/readyz not ready after {timeout:g}s ({last})")


def upload(url: str, nist: Path, offset: int, count: int) -> None:
    for image, label in nist_digits(nist, offset, count):
        body, content_type = multipart({"label": label}, image)
        status, reply = request(f"{url}/v1/samples", "POST", body, {"Content-Type": content_type})
        if status not in (200, 201):
            raise SmokeError(f"upload: HTTP {status}: {reply[:300]!r}")
    print(f"uploaded {count} samples")


def predict(url: str, nist: Path, count: int) -> int:
    """Predict `count` digits; returns the one model version that answered them all."""
    versions, right = set(), 0
    for image, label in nist_digits(nist, 5000, count):
        body, content_type = multipart({}, image)
        status, reply = request(
            f"{url}/v1/predictions", "POST", body, {"Content-Type": content_type}
        )
        if status != 200:
            raise SmokeError(f"predict: HTTP {status}: {reply[:300]!r}")
        answer = json.loads(reply)
        versions.add(answer["model_version"])
        right += answer["label"] == label
    if len(versions) != 1:
        raise SmokeError(f"predictions came from several model versions: {versions}")
    print(f"predicted {count} digits: {right} right, model version {versions.copy().pop()}")
    return versions.pop()


def wait_serving(url: str, nist: Path, version: int, timeout: float) -> None:
    """Until 12 predictions in a row (every replica and uvicorn worker) come from `version`."""
    ((image, _),) = nist_digits(nist, 5000, 1)
    body, content_type = multipart({}, image)
    deadline, in_a_row, seen = time.monotonic() + timeout, 0, -1
    while in_a_row < 12:
        if time.monotonic() > deadline:
            raise SmokeError(f"version {version} not serving after {timeout:g}s (saw {seen})")
        status, reply = request(
            f"{url}/v1/predictions", "POST", body, {"Content-Type": content_type}
        )
        seen = json.loads(reply).get("model_version", -1) if status == 200 else -status
        in_a_row = in_a_row + 1 if seen == version else 0
        time.sleep(0.2 if seen == version else 1)


def retrain(url: str, nist: Path, token: str, timeout: float) -> int:
    """Start a run with the admin route, follow it to its end and to a new serving version.

    The gate may reject a 1-epoch candidate; the admin then activates it (the rollback and
    roll-forward route): either way a new version serves. Returns that version.
    """
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    run = json_request(f"{url}/v1/training-runs", "POST", body=b"{}", headers=auth)
    started, deadline = time.monotonic(), time.monotonic() + timeout
    while run["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise SmokeError(f"training run {run['id']} still {run['status']} after {timeout:g}s")
        time.sleep(3)
        run = json_request(f"{url}/v1/training-runs/{run['id']}")
    if run["status"] != "succeeded":
        raise SmokeError(f"training run {run['id']} {run['status']}: {run['error']}")
    models = json_request(f"{url}/v1/models")
    (version,) = [m["version"] for m in models if m["training_run_id"] == run["id"]]
    print(
        f"training run {run['id']} succeeded in {time.monotonic() - started:.0f}s: "
        f"version {version} {run['decision']} ({run['decision_reason']})"
    )
    if run["decision"] != "promoted":
        json_request(f"{url}/v1/models/{version}/activate", "POST", headers=auth)
        print(f"version {version} activated with the admin route")
    wait_serving(url, nist, version, timeout=120)
    print(f"version {version} serves")
    return version


def counts(url: str) -> dict[str, int]:
    stats = json_request(f"{url}/v1/samples/stats")
    models = json_request(f"{url}/v1/models")
    return {"samples": stats["total"], "models": len(models)}


def metrics(url: str) -> None:
    status, body = request(f"{url}/metrics")
    text = body.decode()
    if status != 200 or "http_requests_total{" not in text:
        raise SmokeError(f"/metrics: HTTP {status}: {text[:300]!r}")
    print(f"/metrics: {sum(1 for line in text.splitlines() if line.startswith('http_'))} lines")


def prometheus_targets(url: str, job: str, expect: int, timeout: float) -> None:
    """Until Prometheus has scraped `expect` targets of `job`, all up."""
    deadline, healthy = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        targets = json_request(f"{url}/api/v1/targets")["data"]["activeTargets"]
        healthy = [
            t["scrapeUrl"] for t in targets if t["labels"]["job"] == job and t["health"] == "up"
        ]
        if len(healthy) >= expect:
            print(f"prometheus: {len(healthy)} {job} targets up: {', '.join(sorted(healthy))}")
            return
        time.sleep(3)
    raise SmokeError(f"prometheus: {len(healthy)} {job} targets up after {timeout:g}s: {healthy}")


def http_ok(url: str, timeout: float) -> None:
    """Until GET url answers 200 (a dashboard that starts after the stack)."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = request(url, timeout=5)
            if status == 200:
                print(f"{url}: 200 {body[:40]!r}")
                return
            last = f"HTTP {status}"
        except OSError as error:  # not listening yet
            last = repr(error)
        time.sleep(2)
    raise SmokeError(f"{url}: {last} after {timeout:g}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("step")
    parser.add_argument("--nist", type=Path)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--token", default="")
    parser.add_argument("--job", default="api")
    parser.add_argument("--expect", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--path", default="/")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    try:
        if args.step == "wait-ready":
            wait_ready(url, args.timeout)
        elif args.step == "upload":
            upload(url, args.nist, args.offset, args.count)
        elif args.step == "predict":
            predict(url, args.nist, args.count)
        elif args.step == "retrain":
            retrain(url, args.nist, args.token, args.timeout)
        elif args.step == "counts":
            print(json.dumps(counts(url), sort_keys=True))
        elif args.step == "metrics":
            metrics(url)
        elif args.step == "http-ok":
            http_ok(url + args.path, args.timeout)
        elif args.step == "prometheus-targets":
            prometheus_targets(url, args.job, args.expect, args.timeout)
        else:
            parser.error(f"unknown step {args.step}")
    except (SmokeError, OSError) as error:
        print(f"compose-smoke: {args.step}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
