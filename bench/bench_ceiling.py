"""How well a picture kind can be read at all: the same small model trained on that kind only,
against one trained on the clean scans only, each read on its own kind (issue 27).

    .venv/bin/python -m bench.bench_ceiling [--max-train 30000] [--epochs 3] [--count 500]

Issue 27 asks for every corpus kind at 97% of clean or more, and the canvas drawing at 98%.
The canvas drawing, the thin pen and "clean, redrawn with a uniform pen" are all drawn by
testkit/corpus.py's `pen`: the NIST glyph's centre lines (a 4x Zhang-Suen skeleton of the 28x28
scan) redrawn with a round pen of one width. Whether what stays below 97% is the model's
ceiling or the picture's is measured here: for each kind, `--max-train` NIST training glyphs
are drawn as that kind (`trainer/rendered.py: render_pictures`, the dev style) and made into
what the API serves (`glyph_as_served`: decode, preprocess); the bundled architecture is trained
from scratch on those alone (`trainer.train.train_model`, seed 0, the validation split drawn
the same way), and reads `--count` writer-disjoint NIST holdout characters drawn as that kind
(testkit's corpus, `dev` and `check` draws). A specialist reading its own kind below the
clean specialist's level says the drawing itself lost what told the characters apart.
"""

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import BenchRun, bench_parser, report
from testkit.tables import markdown_table

CLEAN = "clean"
VALIDATION = 5_000  # of the validation split, drawn too (it only picks the best epoch's report)
KINDS = (CLEAN, "clean, redrawn with a uniform pen", "canvas drawing", "thin pen")


def drawn_as(glyphs: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Each NIST glyph drawn as a picture of `kind` and preprocessed as the API does: uint8."""
    from trainer.rendered import glyph_as_served, render_pictures

    return np.stack([glyph_as_served(p) for p in render_pictures(glyphs, kind, seed)])


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--max-train", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--count", type=int, default=500, help="corpus characters per draw")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    args: argparse.Namespace = parser.parse_args(argv)

    from testkit.corpus import accuracy_by_kind, bundled_session, make_corpus
    from trainer.config import TrainingConfig
    from trainer.data import load_nist
    from trainer.export import export_onnx
    from trainer.train import train_model

    run = BenchRun(args.wait_quiet)
    data = load_nist()
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(data.y_train), args.max_train, replace=False))
    x_train, y_train = data.x_train[chosen], data.y_train[chosen]
    draws = {split: make_corpus(split, args.count, args.kinds) for split in ("dev", "check")}
    config = TrainingConfig(epochs=args.epochs)
    results: dict[str, dict[str, float]] = {}
    for kind in args.kinds:
        specialist = replace(
            data,
            x_train=drawn_as(x_train, kind, seed=1),
            y_train=y_train,
            x_val=drawn_as(data.x_val[:VALIDATION], kind, seed=2),
            y_val=data.y_val[:VALIDATION],
        )
        trained = train_model(specialist, config, verbose=0)
        with tempfile.TemporaryDirectory() as folder:
            session = bundled_session(export_onnx(trained.model, Path(folder) / "model.onnx"))
            results[kind] = {
                split: accuracy_by_kind(
                    replace(corpus, pictures={kind: corpus.pictures[kind]}), session
                )[kind]
                for split, corpus in draws.items()
            }
        print(f"# {kind}: {trained.train_seconds:.0f} s training, {results[kind]}", flush=True)
    rows = []
    for kind, accuracy in results.items():
        shares = [
            f"{accuracy[split]:.1%} ({accuracy[split] / results[CLEAN][split]:.0%} of clean)"
            if CLEAN in results
            else f"{accuracy[split]:.1%}"
            for split in ("dev", "check")
        ]
        rows.append([kind, *shares])
    table = markdown_table(["trained on and reading", "dev", "check"], rows)
    notes = [
        f"{args.max_train} NIST training images drawn as each kind, {args.epochs} epochs from "
        f"scratch, {args.count} holdout characters a draw"
    ]
    report(run, "ceiling", [table], {"args": vars(args), "accuracy": results}, notes)


if __name__ == "__main__":
    main()
