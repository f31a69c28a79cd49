"""Ensembles and test-time augmentation against single models (issue 15), on one budget of data.

    .venv/bin/python -m bench.bench_ensemble MODEL.onnx [MODEL.onnx ...]

Each model alone; the average of their probabilities exported as one ONNX graph
(`trainer.export.ensemble_onnx`: what the service would serve); and test-time augmentation
of the first model (its probabilities averaged over the picture and four copies shifted by one
pixel). Every variant is calibrated as training calibrates a model (trainer.calibrate: the
class frequencies of the training split, weighed by the default class_balance, divided out;
the temperature fitted on the validation split with every class weighing the same).
Accuracy on the NIST test split and the writer-disjoint holdout slice, holdout ECE, and ONNX
Runtime time for one 28x28 picture on one thread (median of 300 runs), the cost a single
prediction pays.
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.common import BenchRun, bench_parser, report
from testkit.tables import markdown_table

SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (dy, dx) pixels
TIMING_RUNS = 300


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 (N, 28, 28) moved by (dy, dx), zeros (no ink) coming in at the edge."""
    moved = np.roll(images, (dy, dx), axis=(1, 2))
    if dy:
        moved[:, 0 if dy > 0 else -1, :] = 0
    if dx:
        moved[:, :, 0 if dx > 0 else -1] = 0
    return moved


def single_image_ms(onnx: bytes, copies: int = 1) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    picture = np.random.default_rng(0).random((copies, 28, 28, 1), dtype=np.float32)
    for _ in range(20):
        session.run(None, {"image": picture})
    times = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        session.run(None, {"image": picture})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


Predict = Callable[[np.ndarray], np.ndarray]  # uint8 images -> probabilities (temperature 1)


def variant_row(name: str, predict: Predict, sets: dict, ms: float, prior: np.ndarray) -> list[str]:
    from trainer.calibrate import apply_calibration, calibrate

    raw = {k: (predict(x), y) for k, (x, y) in sets.items()}
    calibration = calibrate(raw, prior)  # as training calibrates a model
    served = {
        k: (apply_calibration(p, calibration.temperature, prior), y) for k, (p, y) in raw.items()
    }
    return [
        name,
        *(f"{(p.argmax(1) == y).mean():.2%}" for p, y in (served["test"], served["holdout"])),
        f"{calibration.ece_after['holdout']:.2%}",
        f"{calibration.temperature:.3f}",
        f"{ms:.3f}",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args(argv)
    run = BenchRun(args.wait_quiet)

    from trainer.calibrate import learned_prior, with_calibration
    from trainer.config import TrainingConfig
    from trainer.data import load_nist
    from trainer.evaluate import main_holdout, onnx_probabilities
    from trainer.export import ensemble_onnx

    data = load_nist()
    sets = {
        "validation": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
        "holdout": data.holdout[main_holdout(data)],
    }
    prior = learned_prior(data.y_train, len(data.labels), TrainingConfig.class_balance)
    members = [with_calibration(path.read_bytes(), 1.0) for path in args.models]
    rows = [
        variant_row(
            str(path),
            lambda x, m=member: onnx_probabilities(m, x),
            sets,
            single_image_ms(member),
            prior,
        )
        for path, member in zip(args.models, members, strict=True)
    ]
    first = members[0]
    rows.append(
        variant_row(
            f"{args.models[0]} + test-time shifts ({len(SHIFTS)} copies)",
            lambda x: np.mean([onnx_probabilities(first, shifted(x, *s)) for s in SHIFTS], axis=0),
            sets,
            single_image_ms(first, copies=len(SHIFTS)),
            prior,
        )
    )
    if len(members) > 1:
        ensemble = ensemble_onnx(members)
        rows.append(
            variant_row(
                f"ensemble of {len(members)} (one ONNX graph)",
                lambda x: onnx_probabilities(ensemble, x),
                sets,
                single_image_ms(ensemble),
                prior,
            )
        )
    headers = ["variant", "test", "holdout", "holdout ECE", "T", "ONNX ms / picture"]
    report(
        run,
        "ensemble",
        ["Single models, test-time shifts and an ensemble:\n\n" + markdown_table(headers, rows)],
        {"rows": rows, "holdout": main_holdout(data)},
    )


if __name__ == "__main__":
    main()
