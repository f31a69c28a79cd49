"""python -m trainer {train, evaluate, compare, fetch}: see `python -m trainer --help`."""

import argparse
import json
import logging
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

import numpy as np

from core.config import NIST_EMNIST_URL, get_settings
from core.labels import LabelSet
from core.model_report import ModelReport
from trainer.config import ARCHITECTURES, TrainingConfig, WarmStart
from trainer.data import NistData, load_nist
from trainer.fetch import POOL_SPLITS, fetch_emnist

DEFAULT_OUT = Path("artifacts") / "model"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m trainer " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.command == "fetch":
        data_dir = args.data_dir or get_settings().nist_data_dir
        for path in fetch_emnist(data_dir, args.source, args.splits.split(",")):
            print(path)
        return 0

    if args.command == "compare":  # a misspelt run fails now, not after the runs before it
        for run in args.runs.split(","):
            if run != "elm":
                apply_run_name(run, argparse.Namespace(**vars(args)))
    data = load_nist(args.data_dir, LabelSet(args.labels) if args.labels else None)
    print(data.summary())
    if args.command == "train":
        report = train_and_save(data, args, command)
        print_headline(report)
    elif args.command == "evaluate":
        from trainer.evaluate import evaluate_onnx

        report = evaluate_onnx(args.model, data, args.out, calibrate=args.calibrate)
        print_headline(report)
    elif args.command == "compare":
        table = compare_runs(data, args, command)
        print(table)
    elif args.command == "index":
        from trainer.neighbours import index_model_dir

        print(index_model_dir(args.model_dir, data))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_command(commands)
    add_evaluate_command(commands)
    add_compare_command(commands)
    add_fetch_command(commands)
    index = commands.add_parser(
        "index",
        help="give a model directory's ONNX its embedding output and build its neighbour index "
        "(neighbours.npz: NIST examples as the model sees them, the uploads' evidence)",
    )
    data_options(index)
    index.add_argument("--model-dir", type=Path, default=DEFAULT_OUT)
    return parser


def data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", help="label set (default: LABELS setting, 47 classes)")
    parser.add_argument("--data-dir", type=Path, help="NIST data (default: NIST_DATA_DIR)")


def training_options(parser: argparse.ArgumentParser) -> None:
    # Every default is TrainingConfig's: the one place a training default is written.
    default = TrainingConfig()
    parser.add_argument("--epochs", type=int, default=default.epochs)
    parser.add_argument("--max-train", type=int, help="train on at most this many images")
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument(
        "--class-balance", type=float, default=default.class_balance, help="0 natural .. 1 equal"
    )
    parser.add_argument(
        "--label-smoothing", type=float, default=default.label_smoothing, help="0 .. 0.2 typical"
    )
    parser.add_argument("--ema", action="store_true", help="keep a moving average of weights")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument(
        "--rendered-per-kind",
        type=int,
        default=default.rendered_per_kind,
        help="pictures per corpus kind rendered from the training split and preprocessed as the "
        "API does, mixed into every epoch (trainer/rendered.py; needs testkit/)",
    )
    parser.add_argument(
        "--ink-variation",
        type=float,
        default=default.ink_variation,
        help="share of images given a thicker or thinner pen, blur, low resolution, noise or a "
        "cut edge on the fly (trainer/augment.py: vary_ink)",
    )
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument(
        "--augment-strength",
        type=float,
        default=default.augment_strength,
        help="distortions times this (1: default)",
    )


# The subparsers' holder: argparse has no public name for its type.
Commands = Any


def add_train_command(commands: Commands) -> None:
    train = commands.add_parser("train", help="train, export ONNX, evaluate, write a report")
    data_options(train)
    training_options(train)
    train.add_argument("--arch", choices=ARCHITECTURES, default=TrainingConfig().architecture)
    train.add_argument("--initial-weights", type=Path, help="model.weights.h5 to start from")
    train.add_argument("--out", type=Path, default=DEFAULT_OUT)


def add_evaluate_command(commands: Commands) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate an ONNX model, rewrite its report")
    data_options(evaluate)
    evaluate.add_argument("model", type=Path, help="model.onnx")
    evaluate.add_argument("--out", type=Path, help="report directory (default: the model's)")
    evaluate.add_argument(
        "--calibrate",
        action="store_true",
        help="first fit the temperature on the validation split and write it into the model",
    )


def add_compare_command(commands: Commands) -> None:
    compare = commands.add_parser("compare", help="train architectures side by side")
    data_options(compare)
    training_options(compare)
    compare.add_argument(
        "--runs",
        default="cnn,cnn-noaug,lenet5,lenet5-noaug,elm",
        help="comma-separated: an architecture (cnn, cnn_wide, resnet, lenet5), optionally with "
        "modifiers each after a '-': noaug (no augmentation), augK (distortions K times as "
        "strong), lsK (label smoothing K), ema (weight averaging); or elm. E.g. cnn-ls0.1-ema",
    )
    compare.add_argument("--out", type=Path, default=Path("artifacts") / "compare")


def add_fetch_command(commands: Commands) -> None:
    fetch = commands.add_parser(
        "fetch", help="fill DATA_DIR/emnist and DATA_DIR/emnist-holdout from NIST's archive"
    )
    fetch.add_argument("--data-dir", type=Path, help="default: NIST_DATA_DIR")
    fetch.add_argument(
        "--source",
        "--url",
        default=NIST_EMNIST_URL,
        help="gzip.zip (URL or path), a directory holding it, or a directory laid out like "
        "NIST_DATA_DIR (emnist/, emnist-holdout/) to copy; default: NIST's download",
    )
    fetch.add_argument(
        "--splits", default=",".join(POOL_SPLITS), help="splits for emnist/, comma-separated"
    )


def training_config(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        architecture=args.arch,
        epochs=args.epochs,
        augment=args.augment,
        augment_strength=args.augment_strength,
        batch_size=args.batch_size,
        class_balance=args.class_balance,
        max_train=args.max_train,
        rendered_per_kind=args.rendered_per_kind,
        ink_variation=args.ink_variation,
        label_smoothing=args.label_smoothing,
        ema=args.ema,
        seed=args.seed,
    )


def train_and_save(data: NistData, args: argparse.Namespace, command: str) -> ModelReport:
    """Train, then write model.onnx, model.weights.h5 and the report into args.out."""
    from trainer.pipeline import save_model_dir, train_and_evaluate

    initial = getattr(args, "initial_weights", None)
    artifacts = train_and_evaluate(
        data,
        training_config(args),
        warm_start=WarmStart(initial.read_bytes()) if initial else None,
        notes={"command": command},
        verbose="auto",
    )
    save_model_dir(artifacts, args.out)
    return artifacts.report


def print_headline(report: ModelReport) -> None:
    print(f"test accuracy {report.metrics.test_accuracy:.2%}")
    for name, result in report.evaluation.items():
        if name.startswith("holdout/"):
            print(f"{name}: {result.accuracy:.2%}")
    if report.calibration:
        after = report.calibration.ece_after
        print(f"temperature {report.calibration.temperature}; ECE after: {after}")


def compare_runs(data: NistData, args: argparse.Namespace, command: str) -> str:
    """Train each run in args.runs; write and return a Markdown table."""
    rows = []
    for run in args.runs.split(","):
        run_args = argparse.Namespace(**vars(args))
        run_args.out = args.out / run
        if run == "elm":
            rows.append(_elm_row(data, args, run_args.out))
            continue
        apply_run_name(run, run_args)
        report = train_and_save(data, run_args, f"{command}  # run {run}")
        rows.append(_row(run, report))
        print(_table(rows), flush=True)
    table = _table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    header = f"# Comparison\n\nLabels `{data.labels.characters}`; `{command}`\n\n"
    (args.out / "comparison.md").write_text(header + table + "\n")
    (args.out / "comparison.json").write_text(json.dumps(rows, indent=1) + "\n")
    return table


def apply_run_name(run: str, run_args: argparse.Namespace) -> None:
    """Set what a compare run's name says: `cnn-aug0.5-ls0.1-ema` is the cnn with half as strong
    distortions, label smoothing 0.1 and weight averaging; anything else is a usage error."""
    run_args.arch, *modifiers = run.split("-")
    for modifier in modifiers:
        numbered = re.fullmatch(r"(aug|ls)(\d+(?:\.\d+)?)", modifier)
        if modifier == "noaug":
            run_args.augment = False
        elif modifier == "ema":
            run_args.ema = True
        elif numbered and numbered[1] == "aug":
            run_args.augment_strength = float(numbered[2])
        elif numbered:
            run_args.label_smoothing = float(numbered[2])
        else:
            raise SystemExit(f"compare: unknown modifier {modifier!r} in run {run!r}")


def _row(run: str, report: ModelReport) -> dict[str, Any]:
    return {
        "run": run,
        "parameters": report.model.parameters,
        "onnx_kib": round(report.model.onnx_bytes / 1024),
        "epochs": report.training.get("epochs"),
        "test_accuracy": report.metrics.test_accuracy,
        "holdout_accuracy": report.metrics.holdout_accuracy,
        "holdout_slice": report.metrics.holdout_slice,
        "seconds": report.training.get("seconds"),
    }


def _elm_row(data: NistData, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The Extreme Learning Machine: numpy only, so no ONNX file; scored the same way."""
    from trainer.evaluate import main_holdout
    from trainer.model import ExtremeLearningMachine

    x_train, y_train = data.x_train, data.y_train
    if args.max_train is not None:
        x_train, y_train = x_train[: args.max_train], y_train[: args.max_train]
    elm = ExtremeLearningMachine(len(data.labels), seed=args.seed)
    start = time.perf_counter()
    elm.fit(x_train.astype(np.float32) / 255, y_train)
    seconds = time.perf_counter() - start

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        return float((elm.predict(x.astype(np.float32) / 255).argmax(axis=1) == y).mean())

    headline = main_holdout(data)
    row = {
        "run": "elm",
        "parameters": elm.parameter_count,
        "onnx_kib": None,
        "epochs": 1,
        "test_accuracy": accuracy(data.x_test, data.y_test),
        "holdout_accuracy": accuracy(*data.holdout[headline]) if headline else None,
        "holdout_slice": headline,
        "seconds": round(seconds, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(row, indent=1) + "\n")
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    lines = [
        "| run | parameters | ONNX KiB | epochs | test accuracy | holdout accuracy | training s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['parameters']:,} | {r['onnx_kib'] if r['onnx_kib'] else '-'} "
            f"| {r['epochs']} | {pct(r['test_accuracy'])} | {pct(r['holdout_accuracy'])} "
            f"| {r['seconds']:.0f} |"
        )
    return "\n".join(lines)
