"""Retraining wall time on this machine, with the service's own code path and default settings.

    .venv/bin/python -m bench.bench_retrain [--uploads 0 100 1000] [--second]
        [--full | --full-samples N]

Each run happens in a fresh process (as in a worker, TensorFlow is imported before the clock
starts) against its own throwaway Postgres database: the bundled model is installed as the
active version, N synthetic uploads (280x280 canvas PNGs of NIST test characters, as the web
page sends them) are inserted straight into `samples`, a run is opened as an admin's request
opens it (`domain.runs.open_run(session, "manual", threshold=None, ...)`) and
`worker.training.execute_run` is timed, the gate and the registry write included. Phases are
timed by wrapping the functions execute_run calls (load NIST, load uploads, train, export
ONNX, calibrate, score the candidate, index NIST, judge, register). `--second` also times a
warm retrain that follows another in the same database: the serving model's and the
baseline's NIST scores are kept from the first (db.models.ModelScores), so it scores only its
candidate.

A warm retrain uses RETRAIN_EPOCHS=2 and RETRAIN_NIST_SAMPLES=30000 (the defaults); `--full`
runs a full retrain from scratch (FULL_RETRAIN_EPOCHS=4 on all NIST training images, ~3
minutes on 2 cores), `--full-samples N` the same on N NIST images.
"""

import argparse
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import BenchRun, SampleRow, bench_parser, copy_samples, report
from testkit.images import canvas_png, tagged_png
from testkit.nist import nist_glyphs
from testkit.stack import NIST_DATA_DIR, PYTHON, REPO_ROOT, throwaway_database
from testkit.tables import markdown_table

# Where execute_run looks each one up at call time (module attributes), so a wrapper there
# is what it calls.
PHASES = {
    "trainer.data.load_nist": "load NIST",
    "domain.samples.for_training": "load uploads",
    "trainer.pipeline.train_model": "train",
    "trainer.pipeline.export_onnx": "export ONNX",
    "trainer.pipeline.calibrated": "calibrate",
    "trainer.pipeline.predict_sets": "score the candidate",
    "trainer.pipeline.build_index": "index NIST",
    "worker.training.judge": "judge",  # the references' scores (below) and the gate
    "worker.training.nist_scores": "of which the references' NIST scores",
    "worker.training.register": "register",
}


def timed_phases(seconds: dict[str, float], captured: dict[str, Any]) -> None:
    """Wrap what execute_run calls so that each phase's wall time adds up in `seconds`."""
    import importlib

    for dotted, phase in PHASES.items():
        module_name, name = dotted.rsplit(".", 1)
        module = importlib.import_module(module_name)
        original: Callable[..., Any] = getattr(module, name)

        def wrapper(
            *args: Any, _original: Callable[..., Any] = original, _phase: str = phase, **kwargs: Any
        ) -> Any:
            start = time.perf_counter()
            try:
                result = _original(*args, **kwargs)
            finally:
                seconds[_phase] = seconds.get(_phase, 0.0) + time.perf_counter() - start
            if _phase == "train":
                captured["train_size"] = result.train_size
                captured["epochs"] = result.config.epochs
                captured["train_seconds"] = result.train_seconds
            return result

        setattr(module, name, wrapper)


def prepare_database(database_url: str, dsn: str, uploads: int) -> None:
    """The service's settings pointed at the database; the bundled model as the active
    version, and `uploads` canvas uploads stored as the API would store them."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("NIST_DATA_DIR", str(NIST_DATA_DIR))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core.config import get_settings
    from db.session import get_engine, get_sessionmaker, unit_of_work
    from domain.registry import install_bundled

    get_settings.cache_clear()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    with unit_of_work() as session:
        install_bundled(session)
    if uploads:
        glyphs, labels = nist_glyphs(uploads, offset=50_000)
        rows = (
            SampleRow(tagged_png(canvas_png(g), f"retrain-{i}"), label, 280, 280)
            for i, (g, label) in enumerate(zip(glyphs, labels, strict=True))
        )
        copy_samples(dsn, rows)


def timed_run(full: bool) -> dict[str, Any]:
    """Open a run as an admin's request does and time execute_run, phase by phase."""
    started = time.perf_counter()
    import tensorflow  # noqa: F401  (a worker has imported it before any run)

    import worker.training
    from db.models import TrainingRun
    from db.session import get_engine, get_sessionmaker, unit_of_work
    from domain.runs import open_run

    import_seconds = time.perf_counter() - started
    seconds: dict[str, float] = {}
    captured: dict[str, Any] = {}
    timed_phases(seconds, captured)
    with unit_of_work() as session:
        run_id = open_run(session, "manual", threshold=None, full_retrain=full)
    assert run_id is not None
    started = time.perf_counter()
    status = worker.training.execute_run(run_id)
    wall = time.perf_counter() - started
    with get_sessionmaker()() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        metrics, decision, error = run.metrics or {}, run.decision, run.error
    get_engine().dispose()
    return {
        "status": str(status),
        "error": error,
        "decision": decision,
        "wall_seconds": wall,
        "tensorflow_import_seconds": import_seconds,
        "phases": seconds,
        "train_size_per_epoch": captured.get("train_size"),
        "epochs": captured.get("epochs"),
        "train_seconds": captured.get("train_seconds"),
        "metrics": metrics,
    }


def one_run(uploads: int, full: bool, second: bool) -> dict[str, Any]:
    """In this process: a throwaway database, the bundled model, `uploads` uploads, one run
    (`second`: one before it, timed apart, so that the references' scores are kept already)."""
    with throwaway_database("hwr_bench_retrain") as database:
        prepare_database(database.url, database.dsn, uploads)
        first = timed_run(full) if second else None
        result = timed_run(full)
    from core.config import get_settings

    settings = get_settings()
    return {
        "uploads": uploads,
        "full": full,
        "second": second,
        "first_run": first,
        **result,
        "settings": {
            "retrain_epochs": settings.retrain_epochs,
            "retrain_nist_samples": settings.retrain_nist_samples,
            "full_retrain_epochs": settings.full_retrain_epochs,
            "full_retrain_nist_samples": settings.full_retrain_nist_samples,
        },
    }


def run_in_child(
    uploads: int, full: bool, full_samples: int | None, second: bool = False
) -> dict[str, Any]:
    """One run in a fresh interpreter: no TensorFlow state carried from the previous run."""
    env = dict(os.environ)
    if full_samples:
        env["FULL_RETRAIN_NIST_SAMPLES"] = str(full_samples)
    command = [PYTHON, "-m", "bench.bench_retrain", "--child", str(uploads)]
    if full:
        command.append("--full")
    if second:
        command.append("--second")
    what = "a second warm retrain" if second else f"{'full' if full else 'warm'} retrain"
    print(f"# {what}, {uploads} uploads ...", flush=True)
    out = subprocess.run(
        command, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(
        f"# -> {result['status']} ({result['decision']}), {result['wall_seconds']:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result["phases"].items()),
        flush=True,
    )
    return result


def retrain_table(results: list[dict[str, Any]], phase_names: list[str]) -> str:
    rows = []
    for r in results:
        m = r["metrics"]
        seen = (r["train_size_per_epoch"] or 0) * (r["epochs"] or 0)
        kind = "full" if r["full"] else "warm, a second run" if r.get("second") else "warm"
        rows.append(
            [kind, r["uploads"], m.get("nist_train_images", "")]
            + [f"{m.get('epochs', '')} x {r['train_size_per_epoch'] or 0:,}"]
            + [round(r["wall_seconds"], 1)]
            + [round(r["phases"].get(p, 0.0), 1) for p in phase_names]
            + [round(seen / r["train_seconds"]) if r["train_seconds"] else ""]
            + [f"{r['status']}, {r['decision']}"]
        )
    headers = ["retrain", "uploads", "NIST images", "epochs x images per epoch"]
    headers += ["wall s (execute_run)", *[f"{p} s" for p in phase_names]]
    return markdown_table([*headers, "training images/s", "result"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--uploads", type=int, nargs="*", default=[0, 100, 1000])
    parser.add_argument("--full", action="store_true", help="also a full retrain on all NIST")
    parser.add_argument(
        "--full-samples", type=int, help="also a full retrain, on this many NIST images"
    )
    parser.add_argument("--full-uploads", type=int, default=100, help="uploads in the full run")
    parser.add_argument(
        "--second",
        action="store_true",
        help="also a warm retrain after another in the same database (references' scores kept)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:  # the measured process
        print(json.dumps(one_run(args.child, args.full, args.second), default=str))
        return

    run = BenchRun(args.wait_quiet)
    results = [run_in_child(n, False, None) for n in args.uploads]
    if args.second:
        results.append(run_in_child(args.uploads[0], False, None, second=True))
    if args.full or args.full_samples:
        results.append(run_in_child(args.full_uploads, True, args.full_samples))
    phase_names = list(dict.fromkeys(PHASES.values()))
    report(run, "retrain", [retrain_table(results, phase_names)], {"results": results})


if __name__ == "__main__":
    main()
