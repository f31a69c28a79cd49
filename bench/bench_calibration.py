"""Calibrated confidence (issue 15): what dividing out the learned class frequencies and the
temperature do to the bundled model's answers and to the expected calibration error, and what
the low-confidence flag does.

    .venv/bin/python -m bench.bench_calibration [--model DIR]

DIR: a model directory (model.onnx and report.json, as `python -m trainer train` writes it;
default: the bundled model).

Three ways to serve the same network (trainer.calibrate): its own probabilities; a temperature
alone, fitted by NLL on the validation split (what was served before issue 15's prior); the
class frequencies it learned divided out (every class equal a priori) and the temperature
fitted on the validation split with every class weighing the same (served). Accuracy (plain
and per class averaged) and ECE with 15 bins on the validation and test splits (NIST's own
class frequencies, half digits) and the writer-disjoint holdout slice (every class about as
common). Then, at LOW_CONFIDENCE_THRESHOLD, how often served answers are flagged as unsure and
how often flagged and unflagged answers are right.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import BenchRun, bench_parser, report
from testkit.tables import markdown_table

Variants = dict[str, tuple[float, np.ndarray | None]]  # name -> (temperature, prior divided out)
Scored = dict[str, tuple[np.ndarray, np.ndarray]]  # set name -> (probabilities, labels)


def variant_rows(variants: Variants, probabilities: Scored, labels) -> tuple[list, list]:
    from trainer.calibrate import apply_calibration, expected_calibration_error
    from trainer.evaluate import score

    accuracy_rows, ece_rows = [], []
    for name, (temperature, divided) in variants.items():
        served = {
            k: (apply_calibration(p, temperature, divided), y)
            for k, (p, y) in probabilities.items()
        }
        accuracy_rows.append(
            [name]
            + [
                f"{result.accuracy:.2%} / {result.balanced_accuracy:.2%}"
                for result in (score(y, p.argmax(1), labels) for p, y in served.values())
            ]
        )
        ece_rows.append(
            [name, f"{temperature:.3f}"]
            + [f"{expected_calibration_error(p, y):.2%}" for p, y in served.values()]
        )
    return accuracy_rows, ece_rows


def digits_only_rows(variants: Variants, probabilities: Scored, labels) -> list[list[str]]:
    """What a client that knows its field holds digits gets by saying so (`labels`)."""
    from domain.predictor import restrict
    from trainer.calibrate import apply_calibration

    rows = []
    for name, (temperature, divided) in variants.items():
        cells = []
        for p, y in probabilities.values():
            served = apply_calibration(p, temperature, divided)
            narrowed = restrict(served, labels, "0123456789")
            cells.append(
                f"{(served.argmax(1) == y).mean():.2%} / {(narrowed.argmax(1) == y).mean():.2%}"
            )
        rows.append([name, *cells])
    return rows


def flag_table(probabilities: Scored, temperature: float, divided: np.ndarray | None) -> list:
    from core.config import get_settings
    from trainer.calibrate import apply_calibration

    threshold = get_settings().low_confidence_threshold
    rows = []
    for name, (p, y) in probabilities.items():
        calibrated = apply_calibration(p, temperature, divided)
        unsure = calibrated.max(axis=1) < threshold
        right = calibrated.argmax(axis=1) == y
        rows.append(
            [
                name,
                len(y),
                f"{unsure.mean():.1%}",
                f"{right[unsure].mean():.1%}" if unsure.any() else "-",
                f"{right[~unsure].mean():.1%}",
            ]
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--model", type=Path, help="model directory (default: the bundled one)")
    args = parser.parse_args(argv)
    run = BenchRun(args.wait_quiet)

    from core.config import get_settings
    from core.model_report import ModelReport
    from domain.registry import BUNDLED_MODEL_DIR
    from trainer.calibrate import calibrate, learned_prior, with_calibration
    from trainer.data import load_nist
    from trainer.evaluate import main_holdout, onnx_probabilities

    model_dir = args.model or BUNDLED_MODEL_DIR
    data = load_nist()
    trained = ModelReport.model_validate_json((model_dir / "report.json").read_text())
    prior = learned_prior(data.y_train, len(data.labels), trained.training["class_balance"])
    raw = with_calibration((model_dir / "model.onnx").read_bytes(), 1.0)
    holdout = main_holdout(data)
    sets = {
        "validation": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
        f"holdout {holdout}": data.holdout[holdout],
    }
    probabilities = {name: (onnx_probabilities(raw, x), y) for name, (x, y) in sets.items()}
    # Fitted as trainer.calibrate fits them: on the validation split.
    validation = {"validation": probabilities["validation"]}
    variants = {
        "the network's own": (1.0, None),
        "temperature alone (NLL on validation)": (calibrate(validation).temperature, None),
        "learned prior divided out, temperature (classes weighing the same) (served)": (
            calibrate(validation, prior).temperature,
            prior,
        ),
    }
    accuracy_rows, ece_rows = variant_rows(variants, probabilities, data.labels)
    digit_slices = {k: v for k, v in data.holdout.items() if k.startswith(("digits", "mnist"))}
    digits_p = {k: (onnx_probabilities(raw, x), y) for k, (x, y) in digit_slices.items()}
    digit_rows = digits_only_rows(variants, digits_p, data.labels)
    temperature, divided = list(variants.values())[-1]
    flag_rows = flag_table(probabilities, temperature, divided)
    threshold = get_settings().low_confidence_threshold
    tables = [
        f"Accuracy / per-class accuracy averaged, {model_dir}:\n\n"
        + markdown_table(["served as", *probabilities], accuracy_rows),
        f"Expected calibration error (15 bins), {model_dir}:\n\n"
        + markdown_table(["served as", "T", *probabilities], ece_rows),
        "Digits-only holdout slices, answered among all the labels / with labels=0123456789:\n\n"
        + markdown_table(["served as", *digit_slices], digit_rows),
        f"Low-confidence flag at LOW_CONFIDENCE_THRESHOLD={threshold} (served):\n\n"
        + markdown_table(
            ["set", "images", "flagged unsure", "right when flagged", "right when not"],
            flag_rows,
        ),
    ]
    temperatures = {name: t for name, (t, _) in variants.items()}
    report(run, "calibration", tables, {"temperatures": temperatures, "threshold": threshold})


if __name__ == "__main__":
    main()
