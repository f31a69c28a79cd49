"""Calibrated confidence (issue 15): expected calibration error of the bundled model before
and after its temperature, and what the low-confidence flag does.

    .venv/bin/python -m bench.bench_calibration

The network's own probabilities (temperature 1, read from the served graph with the
temperature taken out) against the temperature fitted on the validation split as the trainer
fits it (NLL), and, for comparison, fitted with every class of the validation split weighing
the same. ECE with 15 bins on the validation and test splits and the writer-disjoint holdout
slice. Then, at LOW_CONFIDENCE_THRESHOLD, the share of holdout answers flagged as unsure and
how often flagged and unflagged answers are right.
"""

from collections.abc import Sequence

from bench.common import BenchRun, bench_parser, report
from testkit.tables import markdown_table


def main(argv: Sequence[str] | None = None) -> None:
    args = bench_parser(__doc__).parse_args(argv)
    run = BenchRun(args.wait_quiet)

    from core.config import get_settings
    from domain.registry import BUNDLED_MODEL_DIR
    from trainer.calibrate import (
        apply_temperature,
        class_balanced_weights,
        expected_calibration_error,
        fit_temperature,
        with_temperature,
    )
    from trainer.data import load_nist
    from trainer.evaluate import main_holdout, onnx_probabilities

    data = load_nist()
    raw = with_temperature((BUNDLED_MODEL_DIR / "model.onnx").read_bytes(), 1.0)
    holdout = main_holdout(data)
    sets = {
        "validation": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
        f"holdout {holdout}": data.holdout[holdout],
    }
    probabilities = {name: (onnx_probabilities(raw, x), y) for name, (x, y) in sets.items()}
    validation, labels = probabilities["validation"]
    temperatures = {
        "none (the network's own)": 1.0,
        "NLL on validation (served)": fit_temperature(validation, labels),
        "NLL on validation, classes weighing the same": fit_temperature(
            validation, labels, class_balanced_weights(labels)
        ),
    }
    rows = [
        [name, f"{t:.3f}"]
        + [
            f"{expected_calibration_error(apply_temperature(p, t), y):.2%}"
            for p, y in probabilities.values()
        ]
        for name, t in temperatures.items()
    ]
    threshold = get_settings().low_confidence_threshold
    served = temperatures["NLL on validation (served)"]
    flag_rows = []
    for name, (p, y) in probabilities.items():
        calibrated = apply_temperature(p, served)
        unsure = calibrated.max(axis=1) < threshold
        right = calibrated.argmax(axis=1) == y
        flag_rows.append(
            [
                name,
                len(y),
                f"{unsure.mean():.1%}",
                f"{right[unsure].mean():.1%}" if unsure.any() else "-",
                f"{right[~unsure].mean():.1%}",
            ]
        )
    tables = [
        "Expected calibration error (15 bins), bundled model:\n\n"
        + markdown_table(["temperature", "T", *probabilities], rows),
        f"Low-confidence flag at LOW_CONFIDENCE_THRESHOLD={threshold} (served temperature):\n\n"
        + markdown_table(
            ["set", "images", "flagged unsure", "right when flagged", "right when not"],
            flag_rows,
        ),
    ]
    report(run, "calibration", tables, {"temperatures": temperatures, "threshold": threshold})


if __name__ == "__main__":
    main()
