"""The deployment files: docker-compose.yml, the Dockerfile's targets, .env.example.

No Docker engine is needed: the files are parsed and checked against the code they deploy
(Settings, the entry points, the package extras). `docker-compose config` / `docker compose
config` also validates the file where either is installed. tests/test_stack.py runs the
services' commands natively.
"""

import fnmatch
import importlib
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
ENV_EXAMPLE = REPO_ROOT / ".env.example"

APP_SERVICES = ("api", "worker", "beat")
NIST_MOUNT = "/data/nist"

# --- Helpers (tests/test_stack.py uses them too) -------------------------------------------

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR; $$ is a literal $.
_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_]\w*))"
)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_example() -> dict[str, str]:
    """KEY=VALUE lines of .env.example, values as written (not interpolated)."""
    entries: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f".env.example:{number}: {line!r}"
        assert key not in entries, f".env.example defines {key} twice"
        entries[key] = value
    return entries


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's variable interpolation; a variable that is neither set nor defaulted fails."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match["braced"] or match["plain"]
        op, arg = match["op"], match["arg"] or ""
        value = values.get(name)
        if op == ":-" and not value:
            return arg
        if op == "-" and value is None:
            return arg
        if (op == ":?" and not value) or (op == "?" and value is None):
            raise KeyError(f"{name}: {arg}")
        if value is None:
            raise KeyError(f"{name} is used in docker-compose.yml but not set")
        return value

    return _VARIABLE.sub(substitute, text)


def strings_in(node: Any) -> list[str]:
    """Every string (mapping keys included) in a parsed YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


def compose_variables(compose: dict[str, Any]) -> set[str]:
    names = set()
    for text in strings_in(compose):
        for match in _VARIABLE.finditer(text):
            if match.group(0) != "$$":
                names.add(match["braced"] or match["plain"])
    return names


def resolve(node: Any, values: dict[str, str]) -> Any:
    """The compose document with its variables interpolated."""
    if isinstance(node, str):
        return interpolate(node, values)
    if isinstance(node, dict):
        return {k: resolve(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(item, values) for item in node]
    return node


def resolved_compose() -> dict[str, Any]:
    """docker-compose.yml as compose sees it right after `cp .env.example .env`."""
    return resolve(load_compose(), read_env_example())


def command_args(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {k: "" if v is None else str(v) for k, v in environment.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """{dependency: condition}; the short (list) form means no condition at all."""
    dependencies = service.get("depends_on") or {}
    if isinstance(dependencies, list):
        return dict.fromkeys(dependencies, "service_started")
    return {
        name: (spec or {}).get("condition", "service_started")
        for name, spec in dependencies.items()
    }


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """{target: (source, read_only)} of a service's volumes (short or long syntax)."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target, _, mode = rest.partition(":")
            found[target] = (source, "ro" in mode.split(","))
        else:
            found[volume["target"]] = (volume.get("source", ""), bool(volume.get("read_only")))
    return found


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, each with its instructions (continuations joined)."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue  # comments may sit between continuation lines too
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: dict[str, Stage] = {}
    current: Stage | None = None
    global_args: dict[str, str] = {}  # ARG before the first FROM: name -> default
    for instruction in logical:
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and current is None:  # a global ARG: its default may name the base
            name, _, default = rest.strip().partition("=")
            global_args[name] = default
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], rest)
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name=name, base=words[0])
        else:
            assert current is not None, f"{keyword} before any FROM"
            current.instructions.append((keyword, rest.strip()))
    return stages


def stage_order() -> list[str]:
    """The Dockerfile's stage names in file order (the classic builder's build order)."""
    return list(dockerfile_stages())


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stages a target is built on, from the external base image to the target."""
    chain = [stages[name]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def installed_extras(stages: dict[str, Stage], name: str) -> set[str]:
    """Extras of the package that the target's `pip install` commands name: `.[api,worker]`."""
    extras: set[str] = set()
    for stage in stage_chain(stages, name):
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            for install in re.findall(r"pip3?\s+install\b[^&;|]*", rest):
                for group in re.findall(r"\.\[([\w,\s-]+)\]", install):
                    extras.update(e.strip() for e in group.split(",") if e.strip())
    return extras


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _pattern_matches(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        parts = path.split("/")
        return any(_pattern_matches(pattern[3:], "/".join(parts[i:])) for i in range(len(parts)))
    return pattern.count("/") == path.count("/") and fnmatch.fnmatchcase(path, pattern)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a directory above it) out of the build context."""
    ignored = False
    parts = path.strip("/").split("/")
    for raw in dockerignore_patterns():
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if any(_pattern_matches(pattern, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def build_target(service: dict[str, Any]) -> str:
    build = service["build"]
    assert isinstance(build, dict) and build.get("target"), "the service must name a build target"
    assert build.get("context", ".") in (".", "./"), "the build context is the repository root"
    return build["target"]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


# --- Services -------------------------------------------------------------------------------


def test_the_five_services_with_their_images() -> None:
    services = resolved_compose()["services"]
    assert {"postgres", "redis", *APP_SERVICES} <= set(services)
    assert re.fullmatch(r"postgres:16([.-][\w.-]+)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7([.-][\w.-]+)?", services["redis"]["image"])
    for name in APP_SERVICES:
        assert "build" in services[name], f"{name} is built from the Dockerfile"
        assert services[name].get("restart") == "unless-stopped", name
    for name in ("postgres", "redis"):
        assert services[name].get("restart") == "unless-stopped", name


def test_postgres_redis_and_api_have_healthchecks() -> None:
    services = resolved_compose()["services"]

    def check(name: str) -> str:
        healthcheck = services[name].get("healthcheck")
        assert healthcheck and not healthcheck.get("disable"), f"{name} has no healthcheck"
        test = healthcheck["test"]
        if isinstance(test, str):
            return test
        assert test[0] in ("CMD", "CMD-SHELL"), test
        return " ".join(test[1:])

    assert "pg_isready" in check("postgres")
    assert re.search(r"redis-cli\b.*\bping\b", check("redis"))
    api_check = check("api")
    # The slim API image has neither curl nor wget: the check must use Python's urllib.
    assert "urllib" in api_check and "curl" not in api_check and "wget" not in api_check
    port = re.search(r"https?://(?:127\.0\.0\.1|localhost):(\d+)/readyz\b", api_check)
    assert port, f"the api healthcheck must request /readyz: {api_check}"
    args = command_args(services["api"])
    assert args[args.index("--port") + 1] == port.group(1), "healthcheck and uvicorn ports differ"


def test_app_services_start_once_postgres_and_redis_are_healthy() -> None:
    services = load_compose()["services"]
    for name in APP_SERVICES:
        conditions = depends_on(services[name])
        for store in ("postgres", "redis"):
            assert conditions.get(store) == "service_healthy", f"{name} -> {store}: {conditions}"


def _runs_migrations(args: list[str]) -> bool:
    """A command that applies the migrations: `alembic upgrade head` or a script that does."""
    line = " ".join(args)
    if re.search(r"\balembic\s+upgrade\s+head\b", line) or "db.migrate" in line:
        return True
    for arg in args:
        script = REPO_ROOT / arg
        if arg.endswith(".sh") and script.is_file():
            text = script.read_text()
            if re.search(r"^\s*(exec\s+)?alembic\s+upgrade\s+head\b", text, re.MULTILINE):
                return True
    return False


def test_migrations_are_applied_before_the_api_serves() -> None:
    services = resolved_compose()["services"]
    api = services["api"]
    api_args = command_args(api)
    if _runs_migrations(api_args):  # prestart inside the api command, before uvicorn
        line = " ".join(api_args)
        assert re.search(r"(prestart|alembic upgrade head).*(&&|;).*uvicorn", line), line
        return
    one_shots = [
        name
        for name, condition in depends_on(api).items()
        if condition == "service_completed_successfully"
        and _runs_migrations(command_args(services[name]))
    ]
    assert one_shots, "the api must wait for a one-shot service that runs alembic upgrade head"
    for name in one_shots:
        migrate = services[name]
        assert depends_on(migrate).get("postgres") == "service_healthy"
        # A one-shot restarted after it exits 0 would migrate in a loop.
        assert migrate.get("restart", "no") in ("no", "on-failure"), migrate.get("restart")
        assert build_target(migrate) == build_target(api), "migrate runs the api image"
        # The worker and beat write to the same tables: they wait for the schema too.
        for other in ("worker", "beat"):
            assert depends_on(services[other]).get(name) == "service_completed_successfully"


def test_prestart_script_waits_for_the_database_then_migrates() -> None:
    script = (REPO_ROOT / "scripts" / "prestart.sh").read_text()
    assert script.startswith("#!/bin/sh") and "set -eu" in script
    assert "DB_WAIT_TIMEOUT" in script and "SELECT 1" in script
    migrate = re.search(r"^(exec )?alembic upgrade head$", script, re.MULTILINE)
    assert migrate, "prestart.sh does not run `alembic upgrade head`"
    assert script.index("SELECT 1") < migrate.start(), "it must wait for the database first"


def test_commands_use_the_real_entry_points() -> None:
    services = resolved_compose()["services"]
    api_args = command_args(services["api"])
    uvicorn = api_args[api_args.index("uvicorn") :]
    assert uvicorn[1] == "api.main:app"
    assert uvicorn[uvicorn.index("--host") + 1] == "0.0.0.0"
    assert int(uvicorn[uvicorn.index("--workers") + 1]) >= 2
    module = importlib.import_module("api.main")
    from fastapi import FastAPI

    assert isinstance(module.app, FastAPI)

    from celery import Celery

    assert isinstance(importlib.import_module("worker.celery_app").app, Celery)
    for name, role in (("worker", "worker"), ("beat", "beat")):
        args = command_args(services[name])
        assert args[:4] == ["celery", "-A", "worker.celery_app", role], args
        assert "--loglevel=INFO" in args
    assert "--concurrency=1" in command_args(services["worker"])


def app_user_ids() -> tuple[str, str]:
    """(uid, gid) of the user the Dockerfile's images run as."""
    text = " ".join(r for s in dockerfile_stages().values() for k, r in s.instructions)
    uid = re.search(r"useradd\b[^&]*--uid (\d+)", text)
    gid = re.search(r"groupadd\b[^&]*--gid (\d+)", text)
    assert uid and gid, "the Dockerfile must create its user with a fixed uid and gid"
    return uid[1], gid[1]


def tmpfs_options(service: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{target: {option: value}} of a service's tmpfs mounts."""
    tmpfs = service.get("tmpfs") or []
    found = {}
    for entry in [tmpfs] if isinstance(tmpfs, str) else tmpfs:
        target, _, options = entry.partition(":")
        found[target] = dict(o.partition("=")[::2] for o in options.split(",") if o)
    return found


def test_api_metrics_directory_is_a_tmpfs_of_the_app_user() -> None:
    """A plain tmpfs comes back root-owned 0755 after `docker compose restart` (runc): every
    uvicorn worker then dies on PermissionError. uid/gid/mode keep it the app user's."""
    api = resolved_compose()["services"]["api"]
    directory = service_environment(api).get("PROMETHEUS_MULTIPROC_DIR")
    assert directory, "several uvicorn workers need PROMETHEUS_MULTIPROC_DIR for /metrics"
    options = tmpfs_options(api).get(directory)
    assert options is not None, f"{directory} must be a tmpfs (fresh at each start)"
    uid, gid = app_user_ids()
    assert (options.get("uid"), options.get("gid")) == (uid, gid), options
    assert options.get("mode") and int(options["mode"], 8) & 0o700 == 0o700, options


def test_the_proxy_publishes_the_api_port_and_the_api_scales() -> None:
    """`up --scale api=N` needs an api without a host port: the proxy publishes API_PORT."""
    services = resolved_compose()["services"]
    assert not services["api"].get("ports"), "a published api port forbids --scale api=N"
    proxy = services["proxy"]
    (published,) = proxy["ports"]
    host, container = str(published).rsplit(":", 1)
    assert host == read_env_example()["API_PORT"]
    assert depends_on(proxy).get("api") == "service_healthy"
    (conf_source, _) = mounts(proxy)["/etc/nginx/conf.d/default.conf"]
    conf = (REPO_ROOT / conf_source).read_text()
    assert re.search(rf"^\s*listen {container};", conf, re.MULTILINE)
    api_args = command_args(services["api"])
    # Resolved per request through Docker's DNS: every replica, no reload on scaling.
    assert "resolver 127.0.0.11" in conf
    assert f"http://api:{api_args[api_args.index('--port') + 1]}" in conf
    assert re.search(r"proxy_pass \$\w+;", conf), "proxy_pass through a variable (re-resolved)"
    # Uploads and batches must reach the API's own limits (JSON errors), not nginx's 1m.
    from core.config import Settings

    size = re.search(r"client_max_body_size (\d+)m;", conf)
    assert size and int(size[1]) * 2**20 > Settings(_env_file=None).max_batch_bytes


def test_every_written_path_belongs_to_the_app_user_and_survives_recreation() -> None:
    """Each directory a process writes to is a named volume whose mount point the image
    makes and gives to the app user (a fresh volume takes that owner), or a tmpfs."""
    compose = resolved_compose()
    services = compose["services"]
    made_for_app = " ".join(
        r for s in dockerfile_stages().values() for k, r in s.instructions if k == "RUN"
    )
    writable = {
        "worker": [
            service_environment(services["worker"])["NIST_DATA_DIR"],
            service_environment(services["worker"])["CACHE_DIR"],
        ],
        "beat": ["/var/lib/beat"],
        "nist-data": [service_environment(services["nist-data"])["NIST_DATA_DIR"]],
    }
    for name, paths in writable.items():
        for path in paths:
            source, read_only = mounts(services[name])[path]
            assert source in compose["volumes"] and not read_only, (name, path)
            assert re.search(rf"mkdir -p [^&]*{re.escape(path)}\b", made_for_app), path
            assert re.search(rf"chown app:app [^&]*{re.escape(path)}\b", made_for_app), path
    # CACHE_DIR is a setting (trainer/data.py's pool cache): every app service points it there.
    for name in APP_SERVICES:
        assert service_environment(services[name])["CACHE_DIR"] == "/var/cache/handwriting"


def test_nist_data_service_loads_the_volume_from_nist_source() -> None:
    compose = resolved_compose()
    service = compose["services"]["nist-data"]
    assert service.get("profiles"), "a one-shot run by hand, not started by `up`"
    assert service.get("restart") == "no"
    args = command_args(service)
    assert args[:4] == ["python", "-m", "trainer", "fetch"]
    source_mount = args[args.index("--source") + 1]
    volumes = mounts(service)
    assert volumes[NIST_MOUNT] == ("nist-data", False)
    source, read_only = volumes[source_mount]
    assert source == "./nist-source" and read_only  # NIST_SOURCE empty in .env.example
    raw_volumes = load_compose()["services"]["nist-data"]["volumes"]
    assert f"${{NIST_SOURCE:-./nist-source}}:{source_mount}:ro" in raw_volumes
    assert build_target(service) == build_target(compose["services"]["worker"])  # the trainer
    # The one command README gives for it.
    assert "docker compose run --rm nist-data" in (REPO_ROOT / "README.md").read_text()


def test_monitoring_profile_scrapes_every_api_replica_and_runs_flower() -> None:
    services = resolved_compose()["services"]
    prometheus, flower = services["prometheus"], services["flower"]
    assert prometheus["profiles"] == ["monitoring"] == flower["profiles"]
    (config_source, _) = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((REPO_ROOT / config_source).read_text())
    (api_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "api"]
    (discovery,) = api_job["dns_sd_configs"]  # one target per replica, found through DNS
    api_args = command_args(services["api"])
    assert discovery["names"] == ["api"] and discovery["type"] == "A"
    assert str(discovery["port"]) == api_args[api_args.index("--port") + 1]
    assert api_job.get("metrics_path", "/metrics") == "/metrics"
    args = command_args(flower)
    assert args[:4] == ["celery", "-A", "worker.celery_app", "flower"]
    assert build_target(flower) == build_target(services["worker"])
    assert "monitoring" in installed_extras(dockerfile_stages(), build_target(flower))
    monitoring_extra = pyproject()["project"]["optional-dependencies"]["monitoring"]
    assert any(r.startswith("flower") for r in monitoring_extra)
    # Dashboards that can revoke tasks are published on the host's loopback only.
    for service in (prometheus, flower):
        assert all(str(p).startswith("127.0.0.1:") for p in service["ports"]), service["ports"]


def test_gpu_worker_is_an_opt_in_profile_with_tensorflow_cuda() -> None:
    services = resolved_compose()["services"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert command_args(gpu) == command_args(services["worker"])
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    extras = pyproject()["project"]["optional-dependencies"]
    assert any(r.startswith("tensorflow[and-cuda]") for r in extras["worker-gpu"])
    stages = dockerfile_stages()
    assert "worker-gpu" in installed_extras(stages, build_target(gpu))
    assert "worker" not in installed_extras(stages, build_target(gpu)), "two TensorFlows"


def test_beat_schedule_lives_on_a_volume() -> None:
    compose = resolved_compose()
    beat = compose["services"]["beat"]
    args = command_args(beat)
    schedule = args[args.index("--schedule") + 1]
    volumes = {target: source for target, (source, _) in mounts(beat).items()}
    directory = str(Path(schedule).parent)
    assert directory in volumes, f"{directory} is not mounted in beat: {volumes}"
    assert volumes[directory] in compose["volumes"]


# --- Volumes and settings -------------------------------------------------------------------


def test_named_volumes_for_postgres_data_and_nist_data() -> None:
    compose = resolved_compose()
    declared = compose.get("volumes") or {}
    services = compose["services"]

    pg_source, _ = mounts(services["postgres"])["/var/lib/postgresql/data"]
    assert pg_source in declared, "Postgres data must live on a named volume"

    nist_sources = set()
    for name, read_only in (("api", True), ("worker", False)):
        service_mounts = mounts(services[name])
        assert NIST_MOUNT in service_mounts, f"{name} does not mount the NIST data"
        source, ro = service_mounts[NIST_MOUNT]
        assert ro is read_only, f"{name}: NIST data read-only should be {read_only}"
        nist_sources.add(source)
        assert service_environment(services[name]).get("NIST_DATA_DIR") == NIST_MOUNT
    assert len(nist_sources) == 1 and nist_sources <= set(declared), nist_sources
    assert nist_sources.isdisjoint({pg_source})


def test_every_compose_variable_is_defined_in_env_example() -> None:
    compose = load_compose()
    defined = read_env_example()
    missing = compose_variables(compose) - set(defined)
    assert not missing, f"used in docker-compose.yml, missing from .env.example: {missing}"
    resolve(compose, defined)  # and nothing required is left unset after `cp .env.example .env`
    for name in APP_SERVICES:
        assert compose["services"][name].get("env_file") in (".env", [".env"]), name


def test_env_example_lists_every_setting_with_a_comment() -> None:
    from core.config import Settings

    defined = read_env_example()
    lines = ENV_EXAMPLE.read_text().splitlines()
    for name in Settings.model_fields:
        key = name.upper()
        assert key in defined, f"setting {key} is missing from .env.example"
        number = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[number - 1].startswith("# "), f"{key} has no comment line above it"
    for key in ("POSTGRES_PASSWORD", "ADMIN_TOKEN"):
        assert "CHANGE-ME" in defined[key], f"{key} must be an obvious placeholder"


def test_env_example_values_are_valid_and_match_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.config import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    example = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    deployment_specific = {
        "database_url",
        "broker_url",
        "nist_data_dir",
        "cache_dir",
        "admin_token",
    }
    for name in Settings.model_fields.keys() - deployment_specific:
        assert getattr(example, name) == getattr(defaults, name), f"{name.upper()} differs"
    assert example.broker_url == "redis://redis:6379/0"
    assert str(example.nist_data_dir) == NIST_MOUNT
    assert (
        str(example.cache_dir)
        == service_environment(resolved_compose()["services"]["worker"])["CACHE_DIR"]
    )
    # The URL that .env gives is the one compose builds from the POSTGRES_* values.
    api = resolved_compose()["services"]["api"]
    assert service_environment(api)["DATABASE_URL"] == example.database_url
    assert example.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in example.database_url


# --- Dockerfile -----------------------------------------------------------------------------


def test_api_image_has_no_tensorflow_and_worker_image_has_it() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert any(r.startswith("tensorflow") for r in extras["worker"])
    assert not any("tensorflow" in r for r in extras["api"])

    stages = dockerfile_stages()
    services = load_compose()["services"]
    api_target = build_target(services["api"])
    worker_target = build_target(services["worker"])
    assert build_target(services["beat"]) == worker_target
    assert api_target != worker_target

    api_extras = installed_extras(stages, api_target)
    assert "api" in api_extras and "worker" not in api_extras, api_extras
    api_text = " ".join(r for s in stage_chain(stages, api_target) for _, r in s.instructions)
    assert "tensorflow" not in api_text.lower()
    # The worker image runs worker.tasks and the trainer: the worker extra, on the same base.
    assert "worker" in installed_extras(stages, worker_target)
    api_root = stage_chain(stages, api_target)[0]
    assert stage_chain(stages, worker_target)[0] is api_root


def test_classic_builder_builds_no_tensorflow_for_the_api_target() -> None:
    """The classic builder builds every stage that comes before the target in the file."""
    stages = dockerfile_stages()
    api_target = build_target(load_compose()["services"]["api"])
    order = stage_order()
    before_api = order[: order.index(api_target) + 1]
    chain = [stage.name for stage in stage_chain(stages, api_target)]
    assert before_api == chain, f"{api_target} target also builds {set(before_api) - set(chain)}"


def test_base_image_is_a_build_argument_with_the_official_default() -> None:
    """PYTHON_IMAGE: python:3.11-slim, or scripts/build-base-images.sh's Debian-built one."""
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS base$", dockerfile, re.MULTILINE)
    raw = load_compose()["services"]
    defaults = read_env_example()
    for name, service in raw.items():
        if "build" in service:
            assert service["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim}"
        elif name in ("postgres", "redis", "proxy", "prometheus"):
            variable = re.fullmatch(r"\$\{(\w+_IMAGE):-([^}]+)\}", service["image"])
            assert variable, f"{name}: the image must be a variable with the official default"
            assert defaults[variable[1]] == variable[2], variable[1]
    script = (REPO_ROOT / "scripts" / "build-base-images.sh").read_text()
    for variable in ("PYTHON_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE"):
        assert re.search(rf"^{variable}=handwriting-base/", script, re.MULTILINE), variable


def test_readme_and_compose_header_give_the_same_commands() -> None:
    """The production section of README.md is what the compose file's header (and the smoke
    test, scripts/compose-smoke.sh) runs."""

    def commands(text: str) -> list[str]:
        found = re.findall(
            r"^(?:#[ \t]+)?((?:NIST_SOURCE=\S+ )?docker compose [^#\n]*?)[ \t]*(?:#.*)?$",
            text,
            re.MULTILINE,
        )
        return [" ".join(c.split()) for c in found]

    header = COMPOSE_FILE.read_text().split("\n\n", 1)[0]
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Production") :]
    section = section[: section.index("\n## ", 1)]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "README's production section starts with a sh block"
    assert commands(header) and commands(block[1]) == commands(header)
    smoke = (REPO_ROOT / "scripts" / "compose-smoke.sh").read_text()
    assert "run --rm nist-data" in smoke and "up -d --wait" in smoke and " build" in smoke


def test_dockerfile_base_is_slim_non_root_and_cache_free() -> None:
    stages = dockerfile_stages()
    services = load_compose()["services"]
    for target in {build_target(services[name]) for name in APP_SERVICES}:
        chain = stage_chain(stages, target)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", chain[0].base), chain[0].base
        instructions = [(k, r) for stage in chain for k, r in stage.instructions]
        users = [r.split(":")[0] for k, r in instructions if k == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{target} runs as {users or 'root'}"
        env = " ".join(r for k, r in instructions if k == "ENV")
        assert re.search(r"PYTHONDONTWRITEBYTECODE[= ]1", env)
        no_cache_env = re.search(r"PIP_NO_CACHE_DIR[= ](1|true|yes|on)", env, re.IGNORECASE)
        for keyword, rest in instructions:
            if keyword == "RUN" and re.search(r"pip3?\s+install", rest):
                assert no_cache_env or "--no-cache-dir" in rest, rest


def test_dockerfile_copies_the_source_and_dockerignore_keeps_the_rest_out() -> None:
    stages = dockerfile_stages()
    copied: set[str] = set()
    for stage in stages.values():
        for keyword, rest in stage.instructions:
            if keyword in ("COPY", "ADD") and "--from" not in rest:
                sources = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
                copied.update(s.rstrip("/") for s in sources)
    for needed in ("api", "core", "db", "domain", "worker", "trainer", "scripts"):
        assert needed in copied, f"the images do not copy {needed}/"
    for needed in ("alembic.ini", "pyproject.toml", "README.md"):
        assert needed in copied, f"the images do not copy {needed}"
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    for kept_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "var/handwriting.db",
        ".env",
        ".pytest_cache/v",
        ".ruff_cache/x",
        "api/__pycache__/main.cpython-311.pyc",
        "data/emnist/x",
        "tests/conftest.py",
    ):
        assert dockerignored(kept_out), f".dockerignore lets {kept_out} into the build context"


def test_the_api_image_holds_no_worker_or_trainer_code() -> None:
    api = dockerfile_stages()["api"]
    copied = {
        shlex.split(rest)[0].rstrip("/")
        for keyword, rest in api.instructions
        if keyword in ("COPY", "ADD") and "--from" not in rest
    }
    assert {"api", "core", "db", "domain"} <= copied
    assert "worker" not in copied and "trainer" not in copied, copied
    assert all(not c.startswith(("worker/", "trainer/")) or c == "trainer/bundled" for c in copied)


# --- docker-compose's own validation, where it is installed ---------------------------------


def _compose_command() -> list[str] | None:
    candidates = [["docker", "compose"]] if shutil.which("docker") else []
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        try:
            probe = subprocess.run(
                [*command, "version"], capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` (plugin) nor `docker-compose` is installed; "
            "apt-get install docker-compose to validate the file with compose itself"
        )
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")  # as a deployer does: cp .env.example .env

    # Only the files decide: no variable of this process's environment leaks into compose.
    variables = compose_variables(load_compose())
    env = {k: v for k, v in os.environ.items() if k not in variables}

    def config(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "-f", str(tmp_path / "docker-compose.yml"), "config", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
            env=env,
        )

    result = config("-q")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(config().stdout)["services"]
    assert {"postgres", "redis", *APP_SERVICES} <= set(services)
    assert "CHANGE-ME-postgres-password" in service_environment(services["api"])["DATABASE_URL"]

    # Without a POSTGRES_PASSWORD compose refuses to start anything.
    lines = [
        line for line in ENV_EXAMPLE.read_text().splitlines() if "POSTGRES_PASSWORD=" not in line
    ]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    refused = config("-q")
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr, refused.stderr
