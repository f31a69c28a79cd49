"""Property-based tests of every route against its own OpenAPI schema, with schemathesis.

Cases are generated from /openapi.json (valid ones and deliberately invalid ones) and sent to
the ASGI app in this process, backed by the session's test database. Each reply must not be a
5xx and must match what the schema declares: its status code, content type and body. A route
whose errors are not declared fails here; the fix is to declare them (responses=...) on the
route, not to drop the check.
"""

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.config import get_settings
from testkit.images import png
from tests.integration.conftest import ADMIN_TOKEN, add_model_version

pytestmark = pytest.mark.timeout(240)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation and generation mode. Operations without parameters run out of
# distinct cases early; the others fill the total well past MIN_CASES.
EXAMPLES = 50
MIN_CASES = 1000
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Tally:
    """Cases sent and statuses seen per operation, and the failures found."""

    cases: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(statuses.values()) for statuses in self.cases.values())

    def statuses(self, prefix: str) -> Counter[int]:
        """Statuses seen by every run whose name starts with `prefix`."""
        seen: Counter[int] = Counter()
        for name, statuses in self.cases.items():
            if name.startswith(prefix):
                seen.update(statuses)
        return seen


@pytest.fixture
def schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from api.main import app

    # Generated requests store samples and open training runs; the runs they open must not
    # reach a Celery worker that another test of this session may have started.
    monkeypatch.setattr("domain.runs.publish_training", lambda run_id: False)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield loaded
    finally:
        # Stop the app's lifespan (its model poller) before the session drops the database.
        asgi.shutdown_lifespans()


def is_admin(operation: Any) -> bool:
    return (operation.method.upper(), operation.path) in {
        ("DELETE", "/v1/samples/{sample_id}"),
        ("POST", "/v1/samples/{sample_id}/confirm"),
        ("POST", "/v1/samples/{sample_id}/relabel"),
        ("POST", "/v1/models/{version}/activate"),
        ("POST", "/v1/models/{version}/bless"),
        ("POST", "/v1/training-runs"),
        ("POST", "/v1/keys"),
        ("GET", "/v1/keys"),
        ("DELETE", "/v1/keys/{key_id}"),
    }


def with_real_images(case: Any, data: st.DataObject) -> None:
    """Half the valid-mode uploads get a real image (and a real label), so the success paths and
    their response bodies are checked too, not only the refusals of random bytes."""
    if not isinstance(case.body, dict) or not data.draw(st.booleans(), label="real image"):
        return
    seed = data.draw(st.integers(0, 10**6), label="image seed")
    if "image" in case.body:
        case.body["image"] = png(seed, size=(28, 28))
    if "label" in case.body:
        case.body["label"] = data.draw(st.sampled_from(get_settings().labels), label="label")
    if isinstance(case.body.get("images"), list):
        case.body["images"] = [
            png(seed + i, size=(28, 28)) for i in range(len(case.body["images"]))
        ]


def exercise(
    operation: Any, mode: GenerationMode, headers: dict[str, str], tally: Tally, name: str
) -> None:
    """Send up to EXAMPLES generated cases for one operation; record statuses and a failure."""
    statuses = tally.cases.setdefault(name, Counter())

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases on every run: a failure here is reproducible
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, data: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE:
            with_real_images(case, data)
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses[response.status_code] += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid: an operation without parameters or body in negative mode.
        assert mode is GenerationMode.NEGATIVE, name
    except (Exception, BaseExceptionGroup) as exc:  # every operation runs; failures listed at end
        tally.failures.append(f"{name}: {type(exc).__name__}: {exc}"[:3000])


def seed_rows(client: TestClient) -> None:
    """A few samples and readings, a candidate model and a training run, so that small
    generated ids (Hypothesis tries 1, 2, 3... early) find rows and the 200 replies are
    checked too."""
    for seed in range(5):
        reply = client.post(
            "/v1/samples",
            files={"image": ("x.png", png(seed), "image/png")},
            data={"label": "7"},
        )
        assert reply.status_code == 201, reply.text
        reading = client.post(
            "/v1/readings", files={"image": ("r.png", png(seed, size=(200, 64)), "image/png")}
        )
        assert reading.status_code == 201, reading.text
    add_model_version()


def test_every_route_conforms_to_its_schema_and_never_answers_5xx(
    schema: Any, client: TestClient
) -> None:
    seed_rows(client)
    started = time.monotonic()
    tally = Tally()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 27, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(operation, mode, ADMIN, tally, f"{operation.label} [{mode.value}]")
            if is_admin(operation):
                exercise(operation, mode, {}, tally, f"{operation.label} [{mode.value}, no token]")
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {tally.total} cases in {elapsed:.0f}s")
    for name, statuses in sorted(tally.cases.items()):
        print(f"  {sum(statuses.values()):4d}  {name}  {dict(sorted(statuses.items()))}")

    assert not tally.failures, "\n\n".join(tally.failures)
    assert tally.total >= MIN_CASES, tally.cases
    # The generated cases reached the success paths, not only validation errors.
    assert tally.statuses("POST /v1/samples [positive]")[201] > 0
    assert tally.statuses("POST /v1/predictions [positive]")[200] > 0
    assert tally.statuses("POST /v1/predictions/batch [positive]")[200] > 0
    assert tally.statuses("GET /v1/samples/{sample_id} [positive]")[200] > 0
    assert tally.statuses("POST /v1/models/{version}/activate [positive]")[200] > 0
    assert tally.statuses("POST /v1/models/{version}/bless [positive]")[200] > 0
    # Without the token an admin route never answers 2xx.
    for name, statuses in tally.cases.items():
        if "no token" in name:
            assert all(status >= 400 for status in statuses), (name, statuses)
