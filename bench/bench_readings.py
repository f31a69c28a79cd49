"""Reading whole rows of handwritten characters: ours (domain.reader.read_row) next to
Tesseract, on rows made of writer-disjoint NIST holdout characters (issue 17).

    .venv/bin/python -m bench.bench_readings [--rows 100] [--save-examples DIR]

Six sets of rows (testkit/rows.py): a canvas drawing, a photo of paper and a form with printed
boxes, each with every character apart and with one touching pair. Both systems read the same
picture; a row's text is compared without spaces. Character accuracy is 1 - (edit distance) /
(characters), summed over a set's rows; a row is exact when its whole text is right.

For ours also the segmentation errors, predicted boxes against the true ones by horizontal
extent, per 100 characters: `split` (a true character holding two or more predicted boxes,
each mostly inside it), `merged` (a predicted box holding the centres of two or more true
characters), `missed` (a true character no predicted box overlaps), `extra` (a predicted
box that overlaps no true character: a speck, a form's line). And the reference the
targets are against: the same holdout glyphs read one by one (core.preprocessing +
the model), as a single upload is. Targets: rows without touching characters keep 95% of that
single-character accuracy, rows with a touching pair 85%.

Tesseract is Debian's `tesseract-ocr` (LSTM, its `eng` model), one process per row on a PNG of
it, page segmentation 7 (one line of text), restricted to the model's 47 characters, OpenMP
limited to one thread (ours runs on one thread too); its time includes starting the process,
what a service calling its command line would pay.
"""

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.common import BenchRun, bench_parser, report, verdict
from testkit.nist import balanced_holdout
from testkit.rows import KINDS, Row, make_rows
from testkit.tables import markdown_table

MODEL_DIR = Path("trainer/bundled")
SEED = 17
TARGETS = {False: 0.95, True: 0.85}  # share of the single-character accuracy
EXAMPLES_PER_SET = 4
SEGMENTATION = ("split", "merged", "missed", "extra")

Box = tuple[int, int, int, int]


# --- Scoring ----------------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each 1."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _inside_share(box: Box, truth: Box) -> float:
    """The share of `box`'s width inside `truth`'s horizontal extent."""
    overlap = min(box[0] + box[2], truth[0] + truth[2]) - max(box[0], truth[0])
    return max(0, overlap) / max(box[2], 1)


def segmentation_errors(predicted: Sequence[Box], truth: Sequence[Box]) -> dict[str, int]:
    """Split, merged, missed and extra characters, by the boxes' horizontal extents (see
    the top)."""
    split = sum(sum(_inside_share(p, t) > 0.5 for p in predicted) >= 2 for t in truth)
    centres = [t[0] + t[2] / 2 for t in truth]
    merged = sum(sum(p[0] <= c <= p[0] + p[2] for c in centres) >= 2 for p in predicted)
    missed = sum(not any(_inside_share(p, t) > 0 for p in predicted) for t in truth)
    extra = sum(not any(_inside_share(p, t) > 0 for t in truth) for p in predicted)
    return {"split": split, "merged": merged, "missed": missed, "extra": extra}


@dataclass
class Score:
    """One system's figures on one set of rows."""

    rows: int = 0
    characters: int = 0
    edits: int = 0
    exact: int = 0
    seconds: float = 0.0
    segmentation: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEGMENTATION, 0))
    readings: list[str] = field(default_factory=list)

    def add(self, truth: str, text: str, seconds: float) -> None:
        text = "".join(text.split())
        self.rows += 1
        self.characters += len(truth)
        self.edits += edit_distance(text, truth)
        self.exact += text == truth
        self.seconds += seconds
        self.readings.append(text)

    @property
    def accuracy(self) -> float:
        return 1 - self.edits / self.characters if self.characters else float("nan")

    @property
    def exact_share(self) -> float:
        return self.exact / self.rows if self.rows else float("nan")

    def per_100(self, kind: str) -> float:
        return 100 * self.segmentation[kind] / self.characters if self.characters else float("nan")

    def ms_per_row(self) -> float:
        return 1000 * self.seconds / self.rows if self.rows else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "characters": self.characters,
            "character_accuracy": self.accuracy,
            "exact_rows": self.exact_share,
            "ms_per_row": self.ms_per_row(),
            "segmentation": self.segmentation,
        }


# --- The readers ------------------------------------------------------------------------------


def tesseract_version() -> str:
    out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=True)
    return (out.stdout or out.stderr).splitlines()[0]


def tesseract_text(image: np.ndarray, labels: str) -> str:
    """Tesseract's reading of one row (a PNG through stdin), whitespace removed."""
    png = cv2.imencode(".png", image)[1].tobytes()
    command = ["tesseract", "stdin", "stdout", "--psm", "7"]
    command += ["-c", f"tessedit_char_whitelist={labels}"]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    out = subprocess.run(command, input=png, capture_output=True, check=True, env=env)
    return "".join(out.stdout.decode().split())


Reader = Callable[[Row], tuple[str, list[Box]]]


def our_reader(model: Any, expected_length: bool) -> Reader:
    """domain.reader.read_row on a row's picture: its text and its characters' boxes (an
    unreadable row reads as nothing)."""
    from core.config import get_settings
    from domain.predictor import Predictor
    from domain.reader import ReadingError, read_row

    settings = get_settings()
    predictor = Predictor.from_settings(model, settings)

    def read(row: Row) -> tuple[str, list[Box]]:
        length = len(row.text) if expected_length else None
        try:
            reading = read_row(
                predictor,
                row.image,
                expected_length=length,
                max_characters=settings.max_reading_characters,
            )
        except ReadingError:
            return "", []
        return reading.text, [tuple(c.box) for c in reading.characters]

    return read


def score_rows(rows: Sequence[Row], reader: Reader, with_boxes: bool) -> Score:
    score = Score()
    for row in rows:
        start = time.perf_counter()
        text, boxes = reader(row)
        score.add(row.text, text, time.perf_counter() - start)
        if with_boxes:
            for name, count in segmentation_errors(boxes, row.boxes).items():
                score.segmentation[name] += count
    return score


def single_character_accuracy(model: Any, count: int, offset: int) -> float:
    """The model on the same holdout glyphs, one character per picture (the reference)."""
    from core.preprocessing import preprocess_batch

    images, chars = balanced_holdout(count, offset)
    glyphs = preprocess_batch(list(images))
    predicted = model.probabilities(glyphs).argmax(axis=1)
    labels = model.labels.characters
    return float(np.mean([labels[p] == c for p, c in zip(predicted, chars, strict=True)]))


# --- The run ----------------------------------------------------------------------------------


@dataclass
class SetResult:
    kind: str
    touching: bool
    rows: list[Row]
    offset: int
    tesseract: Score
    ours: Score | None = None
    reference: float | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}{', touching' if self.touching else ''}"


def make_sets(count: int, seed: int) -> list[tuple[str, bool, int, list[Row]]]:
    """The six sets, each from its own holdout characters (offsets one after another)."""
    sets, offset = [], 0
    for index, (kind, touching) in enumerate((k, t) for k in KINDS for t in (False, True)):
        rows = make_rows(count, kind=kind, touching=touching, seed=seed + index, offset=offset)
        sets.append((kind, touching, offset, rows))
        offset += sum(len(row.text) for row in rows)
    return sets


def save_examples(folder: Path, results: Sequence[SetResult]) -> None:
    """A few rows of each set as PNG, with what each system read (index.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for result in results:
        for i, row in enumerate(result.rows[:EXAMPLES_PER_SET]):
            name = f"{result.kind}{'-touching' if result.touching else ''}-{i}.png"
            cv2.imwrite(str(folder / name), row.image)
            ours = result.ours.readings[i] if result.ours else None
            tesseract = result.tesseract.readings[i] if result.tesseract.readings else None
            index.append(
                {
                    "file": name,
                    "truth": row.text,
                    "ours": ours,
                    "tesseract": tesseract,
                    "boxes": row.boxes,
                }
            )
    (folder / "index.json").write_text(json.dumps(index, indent=1))


def run_sets(args: Any, labels: str) -> list[SetResult]:
    model = None
    if not args.no_ours:
        from domain.predictor import load_model

        model = load_model(MODEL_DIR / "model.onnx", version=0, labels=labels)
    results = []
    for kind, touching, offset, rows in make_sets(args.rows, args.seed):
        result = SetResult(kind, touching, rows, offset, Score())
        if not args.no_tesseract:
            result.tesseract = score_rows(
                rows, lambda r: (tesseract_text(r.image, labels), []), False
            )
        if model is not None:
            result.ours = score_rows(rows, our_reader(model, args.expected_length), True)
            count = sum(len(row.text) for row in rows)
            result.reference = single_character_accuracy(model, count, offset)
        print(f"# {result.name}: done", flush=True)
        results.append(result)
    return results


def readings_table(results: Sequence[SetResult]) -> str:
    headers = [
        "set",
        "rows",
        "characters",
        "ours: char acc",
        "ours: exact rows",
        "split / 100",
        "merged / 100",
        "missed / 100",
        "extra / 100",
        "Tesseract: char acc",
        "Tesseract: exact rows",
        "ours: ms/row",
        "Tesseract: ms/row",
    ]
    rows = []
    for r in results:
        ours, tess = r.ours, r.tesseract
        rows.append(
            [
                r.name,
                len(r.rows),
                sum(len(row.text) for row in r.rows),
                f"{ours.accuracy:.1%}" if ours else "-",
                f"{ours.exact_share:.1%}" if ours else "-",
                *(ours.per_100(k) if ours else "-" for k in SEGMENTATION),
                f"{tess.accuracy:.1%}",
                f"{tess.exact_share:.1%}",
                ours.ms_per_row() if ours else "-",
                tess.ms_per_row(),
            ]
        )
    return markdown_table(headers, rows)


def targets_table(results: Sequence[SetResult]) -> str:
    headers = ["set", "single characters (reference)", "ours: char acc", "share", "target", ""]
    rows = []
    for r in results:
        if r.ours is None or r.reference is None:
            continue
        share, target = r.ours.accuracy / r.reference, TARGETS[r.touching]
        rows.append(
            [
                r.name,
                f"{r.reference:.1%}",
                f"{r.ours.accuracy:.1%}",
                f"{share:.1%}",
                f">= {target:.0%}",
                verdict(share, target),
            ]
        )
    return markdown_table(headers, rows)


def raw_results(results: Sequence[SetResult], args: Any, version: str) -> dict[str, Any]:
    return {
        "rows_per_set": args.rows,
        "seed": args.seed,
        "expected_length": args.expected_length,
        "tesseract": version,
        "sets": [
            {
                "kind": r.kind,
                "touching": r.touching,
                "offset": r.offset,
                "reference": r.reference,
                "tesseract": r.tesseract.summary(),
                "ours": r.ours.summary() if r.ours else None,
                "rows": [
                    {
                        "truth": row.text,
                        "tesseract": r.tesseract.readings[i] if r.tesseract.readings else None,
                        "ours": r.ours.readings[i] if r.ours else None,
                    }
                    for i, row in enumerate(r.rows)
                ],
            }
            for r in results
        ],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--rows", type=int, default=100, help="rows per set (6 sets)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--save-examples", type=Path, metavar="DIR", help="write row PNGs here")
    parser.add_argument(
        "--expected-length",
        action="store_true",
        help="tell our reader how many characters each row holds",
    )
    parser.add_argument("--no-ours", action="store_true", help="Tesseract only")
    parser.add_argument("--no-tesseract", action="store_true", help="ours only")
    args = parser.parse_args(argv)
    if not args.no_ours and not Path("domain/reader.py").is_file():
        print("# domain/reader.py is missing: Tesseract only")
        args.no_ours = True
    run = BenchRun(args.wait_quiet)
    labels = json.loads((MODEL_DIR / "report.json").read_text())["labels"]
    version = tesseract_version() if not args.no_tesseract else "not run"
    results = run_sets(args, labels)
    if args.save_examples:
        save_examples(args.save_examples, results)
    notes = [
        f"Rows: testkit/rows.py, seed {args.seed}, {args.rows} per set; holdout characters, "
        f"each set its own. Tesseract: {version}, --psm 7, whitelist of the 47 labels. "
        f"Ours: domain.reader.read_row on {MODEL_DIR}/model.onnx"
        f"{', told the expected length' if args.expected_length else ''}.",
    ]
    tables = [readings_table(results)]
    if any(r.ours for r in results):
        tables.append(
            "Targets (share of the single-character accuracy on the same glyphs):\n\n"
            + targets_table(results)
        )
    report(run, "readings", tables, raw_results(results, args, version), notes)


if __name__ == "__main__":
    main()
