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
    for instruction in logical:
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name=name, base=words[0])
        else:
            assert current is not None, f"{keyword} before any FROM"
            current.instructions.append((keyword, rest.strip()))
    return stages


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
    services = load_compose()["services"]
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


def test_api_port_and_metrics_directory() -> None:
    api = resolved_compose()["services"]["api"]
    assert any(str(p).endswith(":8000") or p == {"target": 8000} for p in api["ports"])
    directory = service_environment(api).get("PROMETHEUS_MULTIPROC_DIR")
    assert directory, "several uvicorn workers need PROMETHEUS_MULTIPROC_DIR for /metrics"
    tmpfs = api.get("tmpfs") or []
    tmpfs = [tmpfs] if isinstance(tmpfs, str) else tmpfs
    assert directory in [t.split(":")[0] for t in tmpfs] or directory in mounts(api)


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
    deployment_specific = {"database_url", "broker_url", "nist_data_dir", "admin_token"}
    for name in Settings.model_fields.keys() - deployment_specific:
        assert getattr(example, name) == getattr(defaults, name), f"{name.upper()} differs"
    assert example.broker_url == "redis://redis:6379/0"
    assert str(example.nist_data_dir) == NIST_MOUNT
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
