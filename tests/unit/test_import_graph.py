"""The layers, read from the source: the API and the domain layer never reach the worker or the
trainer (and so never TensorFlow), even through an import inside a function."""

import ast
from pathlib import Path

from testkit.stack import REPO_ROOT

PROJECT_PACKAGES = ("api", "core", "db", "domain", "trainer", "worker", "testkit", "bench")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions included), as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_file(name: str) -> Path | None:
    base = REPO_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_from(package: str) -> dict[str, str]:
    """Project modules reachable from `package`'s files: module -> a module that imports it."""
    seen: dict[str, str] = {}
    todo = [
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO_ROOT / package).rglob("*.py")
    ]
    for name in todo:
        seen.setdefault(name, "(start)")
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None:
            continue
        for imported in imported_modules(path):
            if imported.split(".")[0] in PROJECT_PACKAGES and imported not in seen:
                seen[imported] = name
                todo.append(imported)
    return seen


def test_api_and_domain_never_import_the_worker_or_the_trainer() -> None:
    for package in ("api", "domain", "core", "db"):
        reached = reachable_from(package)
        bad = {m: by for m, by in reached.items() if m.split(".")[0] in ("worker", "trainer")}
        assert not bad, f"{package}/ reaches {bad}"
        third_party = set()
        for name in reached:
            path = module_file(name)
            if path is not None:
                third_party |= {m.split(".")[0] for m in imported_modules(path)}
        assert not third_party & {"tensorflow", "keras", "tf2onnx", "matplotlib"}, package


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from worker.training import execute_run\n")
    assert "worker.training" in imported_modules(module)


def test_a_router_never_imports_another_router() -> None:
    """What two routers share (a serializer, a dependency) lives in api/schemas.py or
    api/deps.py: a router is read alone."""
    routers = REPO_ROOT / "api" / "routers"
    for path in routers.glob("*.py"):
        if path.name == "__init__.py":
            continue
        others = {
            name
            for name in imported_modules(path)
            if name.startswith("api.routers.") and name.split(".")[2] != "API_PREFIX"
        }
        assert not others, f"{path.name} imports {sorted(others)}"
