"""/healthz, /readyz, /metrics and the OpenAPI document."""

import logging
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from db.migrate import head_revision
from db.session import get_engine
from testkit.images import png


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_database_and_migration(client: TestClient) -> None:
    reply = client.get("/readyz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "database": "ok", "migrations": head_revision()}


def test_readyz_logs_nothing_at_info(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """/readyz is the container healthcheck: a line per call would flood the logs."""
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert client.get("/readyz").status_code == 200
    # uvicorn's access line, as uvicorn writes it (the test client has no uvicorn).
    access = logging.getLogger("uvicorn.access")
    for path in ("/readyz", "/healthz", "/v1/models"):
        access.info('%s - "%s %s HTTP/%s" %d', "172.18.0.1:5000", "GET", path, "1.1", 200)
    server_lines = [r.getMessage() for r in caplog.records if r.name != "httpx"]
    assert server_lines == ['172.18.0.1:5000 - "GET /v1/models HTTP/1.1" 200']


def test_readyz_is_503_when_migrations_are_behind(client: TestClient) -> None:
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'behind'"))
    try:
        reply = client.get("/readyz")
        assert reply.status_code == 503
        assert "alembic upgrade head" in reply.json()["migrations"]
    finally:
        with get_engine().begin() as conn:
            conn.execute(
                text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()}
            )


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    def count(route: str, status: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if (
                line.startswith("http_requests_total{")
                and f'route="{route}"' in line
                and f'status="{status}"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before_ok, before_404 = (
        count("/v1/samples/{sample_id}", "200"),
        count("/v1/samples/{sample_id}", "404"),
    )
    sample_id = client.post(
        "/v1/samples", files={"image": ("x.png", png(1), "image/png")}, data={"label": "1"}
    ).json()["id"]
    client.get(f"/v1/samples/{sample_id}")
    client.get("/v1/samples/123456")
    client.get("/v1/samples/123457")
    assert count("/v1/samples/{sample_id}", "200") == before_ok + 1
    assert count("/v1/samples/{sample_id}", "404") == before_404 + 2
    text_ = client.get("/metrics").text
    latency = 'http_request_duration_seconds_count{method="GET",route="/v1/samples/{sample_id}"}'
    assert latency in text_
    assert "samples_stored 1.0" in text_


def test_unknown_paths_share_one_metrics_label(client: TestClient) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    text_ = client.get("/metrics").text
    assert 'route="unmatched",status="404"' in text_
    assert "/no/such/path" not in text_


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/samples",
        "/v1/samples/{sample_id}",
        "/v1/samples/{sample_id}/image",
        "/v1/samples/stats",
        "/healthz",
        "/readyz",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_need_no_internet(client: TestClient, page: str) -> None:
    """Swagger UI and ReDoc load their scripts and styles from this app, never from a CDN: a
    deployment behind a firewall still has its docs."""
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in assets:
        reply = client.get(asset)
        assert reply.status_code == 200, asset
        assert len(reply.content) > 1000 or asset.endswith(".png")
