"""Label hygiene by evidence (issue 29): how many uploads the bundled model's neighbour index
holds as suspect, honest ones and poisoned ones, and what weighing one costs.

    .venv/bin/python -m bench.bench_evidence [--count 300]

Every picture goes the upload's way: decoded and preprocessed as the API does
(testkit.corpus.read_pictures, or core.preprocessing for NIST glyphs), read by the bundled
model with its embedding, weighed against its neighbour index (domain/evidence.py: weigh) with
the production settings (EVIDENCE_*). Rows:
- honest: NIST test characters with their labels; every kind of the testkit corpus (the `check`
  draw: NIST holdout writers drawn as pictures people send) with their labels; new styles
  (testkit/styles.py) of NIST training characters with their labels;
- poison: NIST training characters under another label, look-alike pairs and random ones.
"""

import time
from collections.abc import Sequence

import numpy as np

from bench.common import BenchRun, bench_parser, report
from core.config import get_settings
from core.neighbours import NEIGHBOURS_FILE
from core.preprocessing import MODEL_INPUT_SHAPE, preprocess_image
from domain.evidence import evidence_rules, weigh
from domain.predictor import LoadedModel, load_model
from domain.registry import BUNDLED_MODEL_DIR
from testkit.styles import STYLES, in_style
from testkit.tables import markdown_table

# (character, the label it is uploaded under): look-alikes NIST itself mixes, and plain lies.
RELABELS = [("1", "7"), ("7", "1"), ("1", "I"), ("0", "O"), ("5", "S"), ("9", "g"), ("2", "Z")]


def bundled() -> LoadedModel:
    return load_model(
        BUNDLED_MODEL_DIR / "model.onnx",
        0,
        get_settings().labels,
        index=(BUNDLED_MODEL_DIR / NEIGHBOURS_FILE).read_bytes(),
    )


def glyph_batch(images: np.ndarray) -> np.ndarray:
    """NIST images as an upload of them reaches the model."""
    return np.stack([preprocess_image(i) for i in images]).reshape(-1, *MODEL_INPUT_SHAPE)


def held(model: LoadedModel, batch: np.ndarray, labels: Sequence[str]) -> tuple[float, float]:
    """Share held as suspect, and milliseconds per upload to weigh (the model run included)."""
    rules = evidence_rules(get_settings())
    assert model.index is not None
    started = time.perf_counter()
    _, embeddings = model.probabilities_and_embeddings(batch)
    verdicts = [
        weigh(model.index, e, label, rules).contradicts
        for e, label in zip(embeddings, labels, strict=True)
    ]
    milliseconds = (time.perf_counter() - started) * 1000 / max(len(labels), 1)
    return float(np.mean(verdicts)), milliseconds


def honest_rows(model: LoadedModel, count: int) -> list[list[object]]:
    from testkit.corpus import make_corpus, read_pictures
    from testkit.nist import nist_glyphs, training_characters

    rows: list[list[object]] = []
    images, labels = nist_glyphs(count, offset=1000)
    rows.append(["NIST test characters", len(labels), *held(model, glyph_batch(images), labels)])
    corpus = make_corpus("check", count)
    characters = get_settings().labels
    truth = [characters[i] for i in corpus.labels]
    for kind, pictures in corpus.pictures.items():
        rows.append([f"corpus: {kind}", len(truth), *held(model, read_pictures(pictures), truth)])
    for style in STYLES:
        images, labels = [], []
        for c in "347":
            chosen, _ = training_characters(count // 3, offset=2000, character=c)
            images.append(in_style(style, chosen))
            labels += [c] * len(chosen)
        batch = glyph_batch(np.concatenate(images))
        rows.append([f"new style: {style} 3/4/7", len(labels), *held(model, batch, labels)])
    return rows


def poison_rows(model: LoadedModel, count: int) -> list[list[object]]:
    from testkit.nist import training_characters

    rows: list[list[object]] = []
    for character, label in RELABELS:
        images, _ = training_characters(count, offset=3000, character=character)
        batch = glyph_batch(images)
        rows.append(
            [f"`{character}` as `{label}`", len(images), *held(model, batch, [label] * len(images))]
        )
    images, truth = training_characters(count, offset=40_000)
    characters = get_settings().labels
    rng = np.random.default_rng(0)
    shifted = [
        characters[(characters.index(t) + int(s)) % len(characters)]
        for t, s in zip(truth, rng.integers(1, len(characters), len(truth)), strict=True)
    ]
    rows.append(
        [
            "any character, a random other label",
            len(truth),
            *held(model, glyph_batch(images), shifted),
        ]
    )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--count", type=int, default=300, help="pictures per row")
    args = parser.parse_args(argv)
    run = BenchRun(args.wait_quiet)
    model = bundled()
    assert model.index is not None
    header = [
        "uploads",
        "n",
        "held as suspect",
        "ms per upload (the model in batches, the evidence one by one)",
    ]

    def table(rows: list[list[object]]) -> str:
        shown = [[name, n, f"{share:.1%}", f"{ms:.2f}"] for name, n, share, ms in rows]
        return markdown_table(header, shown)

    honest, poison = honest_rows(model, args.count), poison_rows(model, args.count)
    index_mb = model.index.vectors.nbytes / 2**20
    notes = [
        f"Index: {len(model.index.classes)} NIST glyphs x {model.index.vectors.shape[1]} "
        f"dimensions, {index_mb:.1f} MB in memory; rules: {evidence_rules(get_settings())}.",
    ]
    raw = {"honest": honest, "poison": poison, "index_mb": index_mb}
    report(
        run,
        "evidence",
        ["Honest uploads:\n\n" + table(honest), "Poison:\n\n" + table(poison)],
        raw,
        notes,
    )


if __name__ == "__main__":
    main()
