"""The learning loop's retrain, in-process, the way the worker runs it: what learning a new style
costs NIST's classes, and whether the gate lets it through, for several draws of the uploads.

    .venv/bin/python -m bench.bench_learning [--styles rotated outlined] [--draws 3]
                                            [--variants nist all]

For each style (testkit/styles.py: a quarter turn, hollow strokes) the loop's classes 3, 4 and 7
are uploaded: 30 of each from NIST's training split, of which a draw keeps 60 (which ones an
evaluation key keeps out differs by key, so a draw stands for a key). A warm retrain from the
bundled model with the production defaults (RETRAIN_EPOCHS, RETRAIN_NIST_SAMPLES,
RETRAIN_LEARNING_RATE, uploads repeated to UPLOAD_SHARE of an epoch), scored on 60 unseen
characters of each class in the style (NIST's test split) and on NIST's test split, and gated
against the bundled model (baseline and active) with the paired per-class test. Variants:
`nist` counts only NIST's images in the class balance (the default), `all` counts the uploads'
copies too (before), `none` uploads nothing. `--unmatched`: the candidate's prior is only
divided out, not matched to the bundled model's readings (before).
"""

import time
from dataclasses import replace
from typing import Any

import numpy as np

from bench.common import BenchRun, bench_parser, report
from core.config import get_settings
from core.labels import LabelSet
from core.model_report import headline_metrics
from domain.gate import Outcomes, Scores, gate
from domain.registry import BUNDLED_MODEL_DIR
from domain.samples import upload_copies
from testkit.styles import in_style
from testkit.tables import markdown_table
from worker.training import bundled_warm_start, gate_rules

CLASSES = "347"


def outcomes(labels: LabelSet, y: np.ndarray, probabilities: np.ndarray) -> Outcomes:
    return Outcomes(np.array(list(labels.characters))[y], probabilities.argmax(axis=1) == y)


def scores_of(onnx: bytes, data, labels: LabelSet) -> Scores:
    from trainer.evaluate import main_holdout, nist_sets, predict_sets, score_sets

    sets = nist_sets(data, every_slice=False)
    probabilities = predict_sets(onnx, sets)
    scored = score_sets(probabilities, sets, labels)
    return Scores(
        headline_metrics(scored, main_holdout(data)),
        scored["test"].per_class,
        outcomes(labels, data.y_test, probabilities["test"]),
    )


def style_sets(data, labels: LabelSet, style: str) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    classes = [labels.index(c) for c in CLASSES]

    def pick(x, y, per_class):
        chosen = np.concatenate(
            [rng.choice(np.flatnonzero(y == c), per_class, False) for c in classes]
        )
        return in_style(style, x[chosen]), y[chosen]

    return {
        "uploads": pick(data.x_train, data.y_train, 30),
        "unseen": pick(data.x_test, data.y_test, 60),
    }


def retrain(
    data, labels: LabelSet, uploads, variant: str, draw: int, overrides: dict, matched: bool
):
    """A warm retrain from the bundled model with 60 of the uploads (drawn by `draw`), or none
    (`variant` "none": what the retrain alone changes). `matched`: the candidate's prior is
    matched to the bundled model's readings, as the worker does (else only divided out)."""
    warm_start = bundled_warm_start()
    if not matched:
        warm_start = replace(warm_start, onnx=None)
    from trainer.config import ExtraSamples
    from trainer.pipeline import train_and_evaluate
    from worker.training import retrain_config

    settings = get_settings()
    x, y = uploads
    kept = np.sort(np.random.default_rng(100 + draw).choice(len(y), 60, replace=False))
    config = retrain_config(settings, warm=True)
    config = type(config)(
        **{**config.__dict__, "extra_in_class_balance": variant == "all", **overrides}
    )
    copies = upload_copies(
        60,
        config.max_train or len(data.y_train),
        settings.upload_share,
        settings.max_upload_oversample,
    )
    extra = None if variant == "none" else ExtraSamples(x[kept], y[kept], copies)
    started = time.perf_counter()
    artifacts = train_and_evaluate(
        data,
        config,
        extra=extra,
        warm_start=warm_start,
        every_slice=False,
    )
    return artifacts, time.perf_counter() - started


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--styles", nargs="+", default=["rotated", "outlined"])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="+", default=["nist", "all"], help="nist, all, or none (no uploads)"
    )
    parser.add_argument("--learning-rate", type=float, help="default: RETRAIN_LEARNING_RATE")
    parser.add_argument("--epochs", type=int, help="default: RETRAIN_EPOCHS")
    parser.add_argument("--nist-samples", type=int, help="default: RETRAIN_NIST_SAMPLES")
    parser.add_argument("--distill", type=float, help="default: none")
    parser.add_argument("--freeze-batch-norm", action="store_true", default=None)
    parser.add_argument(
        "--unmatched",
        action="store_true",
        help="do not match the candidate's prior to the bundled model's readings (before)",
    )
    args = parser.parse_args()
    run = BenchRun(args.wait_quiet)
    from trainer.data import load_nist
    from trainer.evaluate import onnx_probabilities

    settings = get_settings()
    labels = LabelSet(settings.labels)
    data = load_nist(settings.nist_data_dir, labels)
    bundled_onnx = (BUNDLED_MODEL_DIR / "model.onnx").read_bytes()
    bundled = scores_of(bundled_onnx, data, labels)
    rules = gate_rules(settings)
    overrides = {
        name: value
        for name, value in (
            ("learning_rate", args.learning_rate),
            ("epochs", args.epochs),
            ("max_train", args.nist_samples),
            ("distill", args.distill),
            ("freeze_batch_norm", args.freeze_batch_norm),
        )
        if value is not None
    }
    rows, raw = [], []
    for style in args.styles:
        sets = style_sets(data, labels, style)
        unseen_x, unseen_y = sets["unseen"]
        before = float((onnx_probabilities(bundled_onnx, unseen_x).argmax(1) == unseen_y).mean())
        for variant in args.variants:
            for draw in range(args.draws):
                artifacts, seconds = retrain(
                    data, labels, sets["uploads"], variant, draw, overrides, not args.unmatched
                )
                candidate = scores_of(artifacts.onnx, data, labels)
                decision = gate(candidate, bundled, bundled, rules)
                after = float(
                    (onnx_probabilities(artifacts.onnx, unseen_x).argmax(1) == unseen_y).mean()
                )
                deltas = {
                    c: candidate.test_per_class[c].accuracy - bundled.test_per_class[c].accuracy
                    for c in CLASSES
                }
                failed = [c.detail for c in decision.checks if not c.passed]
                # Every class the paired test finds significantly worse, whatever the floor.
                strict = gate(candidate, bundled, bundled, replace(rules, max_class_drop=0.0))
                losses = sorted(
                    {
                        (c.label, round((c.reference or 0) - (c.candidate or 0), 3))
                        for c in strict.checks
                        if c.label and not c.passed
                    },
                    key=lambda item: -item[1],
                )
                rows.append(
                    [
                        style,
                        variant,
                        draw,
                        f"{before:.1%} → {after:.1%}",
                        f"{bundled.metrics.test_accuracy:.2%} → "
                        f"{candidate.metrics.test_accuracy:.2%}",
                        " ".join(f"{c} {d * 100:+.1f}" for c, d in deltas.items()),
                        "promoted" if decision.promote else "refused",
                        ", ".join(f"{label} -{drop * 100:.1f}" for label, drop in losses) or "none",
                        f"{seconds:.0f} s",
                    ]
                )
                raw.append(
                    {
                        "style": style,
                        "variant": variant,
                        "draw": draw,
                        "before": before,
                        "after": after,
                        "deltas": deltas,
                        "promote": decision.promote,
                        "failed": failed,
                        "test": candidate.metrics.test_accuracy,
                    }
                )
                print(rows[-1], flush=True)
    header = [
        "style",
        "class balance",
        "draw",
        "unseen, in the style",
        "NIST test",
        "NIST test 3 / 4 / 7 (points)",
        "gate",
        "classes significantly below the bundled model (points)",
        "retrain",
    ]
    notes = [
        f"Retrain settings beyond the defaults: {overrides or 'none'}; the prior "
        + ("only divided out (--unmatched)." if args.unmatched else "matched (as the worker).")
    ]
    report(run, "learning", [markdown_table(header, rows)], {"runs": raw}, notes)


if __name__ == "__main__":
    main()
