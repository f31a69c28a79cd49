"""Which augmentation buys what, on a short budget: the same small training run with and without
the pictures rendered for training and the on-the-fly ink variation (issue 27).

    .venv/bin/python -m bench.bench_ablation [--max-train 40000] [--epochs 2] [--count 200]

Each variant trains the bundled model's architecture from scratch on the same `--max-train`
NIST training images (`trainer.train.train_model`, seed 0), then reads the testkit corpus
(writer-disjoint NIST holdout characters, dev draw) through the API's decoding and
preprocessing, and NIST's test split. Variants: NIST's scans only (geometric distortions, as
before issue 27); + ink variation (`trainer/augment.py: vary_ink`, half the images); + rendered
pictures (`trainer/rendered.py`, `--rendered-per-kind` per corpus kind); + both.

    .venv/bin/python -m bench.bench_ablation --warm

A worker's warm retrain instead: each variant starts from the bundled model's weights with the
worker's settings (`worker.training.retrain_config`: RETRAIN_EPOCHS, RETRAIN_NIST_SAMPLES,
RETRAIN_LEARNING_RATE), NIST's scans only against + RETRAIN_RENDERED_PER_KIND rendered
pictures: whether a retrain keeps what the starter model learnt about pictures.
"""

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.common import BenchRun, bench_parser, report
from testkit.tables import markdown_table

if TYPE_CHECKING:
    from trainer.config import TrainingConfig


def trained_variants(args: argparse.Namespace) -> tuple[dict[str, "TrainingConfig"], Path | None]:
    """The configurations compared, and the weights they start from (None: from scratch)."""
    from core.config import get_settings
    from domain.registry import BUNDLED_MODEL_DIR
    from trainer.config import TrainingConfig
    from worker.training import retrain_config

    if args.warm:
        settings = get_settings()
        base = replace(retrain_config(settings, warm=True), rendered_per_kind=0)
        rendered = replace(base, rendered_per_kind=settings.retrain_rendered_per_kind)
        variants = {"NIST scans only": base, "+ rendered pictures": rendered}
        return variants, BUNDLED_MODEL_DIR / "model.weights.h5"
    base = TrainingConfig(epochs=args.epochs, max_train=args.max_train)
    return {
        "NIST scans only": base,
        "+ ink variation": replace(base, ink_variation=0.5),
        "+ rendered pictures": replace(base, rendered_per_kind=args.rendered_per_kind),
        "+ both": replace(base, rendered_per_kind=args.rendered_per_kind, ink_variation=0.5),
    }, None


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--max-train", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--count", type=int, default=200, help="corpus characters per kind")
    parser.add_argument("--rendered-per-kind", type=int, default=500)
    parser.add_argument("--warm", action="store_true", help="a worker's warm retrain's variants")
    args = parser.parse_args(argv)

    from testkit.corpus import accuracy_by_kind, bundled_session, make_corpus
    from trainer.data import load_nist
    from trainer.evaluate import predict_sets
    from trainer.export import export_onnx
    from trainer.train import train_model

    run = BenchRun(args.wait_quiet)
    data = load_nist()
    corpus = make_corpus("dev", args.count)
    variants, initial = trained_variants(args)
    results: dict[str, dict[str, float]] = {}
    for name, config in variants.items():
        trained = train_model(data, config, initial_weights=initial, verbose=0)
        with tempfile.TemporaryDirectory() as folder:
            onnx = export_onnx(trained.model, Path(folder) / "model.onnx")
            accuracy = accuracy_by_kind(corpus, bundled_session(onnx))
            test = predict_sets(onnx.read_bytes(), {"test": (data.x_test, data.y_test)})["test"]
        accuracy["NIST test split"] = float((test.argmax(axis=1) == data.y_test).mean())
        results[name] = accuracy
        print(f"# {name}: {trained.train_seconds:.0f} s training", flush=True)
    kinds = list(next(iter(results.values())))
    rows = [[kind, *(f"{results[name][kind]:.1%}" for name in variants)] for kind in kinds]
    pictures = [kind for kind in kinds if kind != "NIST test split"]
    mean = [np.mean([results[name][kind] for kind in pictures]) for name in variants]
    rows.append(["mean over the corpus's kinds", *(f"{m:.1%}" for m in mean)])
    table = markdown_table(["kind", *variants], rows)
    shared = next(iter(variants.values()))  # the variants differ in their pictures only
    notes = [
        f"{shared.max_train} NIST images, {shared.epochs} epochs, {args.count} characters a kind"
        + (", warm start from the bundled model" if initial else "")
    ]
    report(run, "ablation", [table], {"args": vars(args), "accuracy": results}, notes)


if __name__ == "__main__":
    main()
