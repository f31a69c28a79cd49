"""The pictures a model misreads on one NIST set, on one sheet (issue 15).

    .venv/bin/python -m bench.error_sheet [--model-dir trainer/bundled] [--set holdout/NAME]
                                          [--out var/bench/errors.png] [--limit 144]

Each misread picture, as the dataset holds it, under `label>answer probability`: to see whether
what is left of a model's error is the model's (a clear character read wrongly) or the data's
(a character a person would read as the model does, or could not read at all). The set defaults
to the model's headline holdout slice.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.labels import LabelSet
from trainer.data import load_nist
from trainer.evaluate import main_holdout, nist_sets, onnx_probabilities

CELL = 56  # pixels per picture on the sheet (the 28x28 picture at twice its size)
CAPTION = 14
COLUMNS = 12


def error_sheet(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, characters: str, limit: int
) -> tuple[Image.Image, int]:
    """A white sheet of the misread pictures (dark ink), and how many were misread."""
    answers = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(answers != labels)
    shown = wrong[:limit]
    rows = max(1, -(-len(shown) // COLUMNS))
    sheet = Image.new("L", (COLUMNS * CELL, rows * (CELL + CAPTION)), 255)
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(shown):
        row, column = divmod(k, COLUMNS)
        x, y = column * CELL, row * (CELL + CAPTION)
        sheet.paste(Image.fromarray(255 - images[i]).resize((CELL, CELL)), (x, y))
        caption = f"{characters[labels[i]]}>{characters[answers[i]]} {probabilities[i].max():.2f}"
        draw.text((x + 2, y + CELL), caption, fill=0)
    return sheet, len(wrong)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("trainer/bundled"))
    parser.add_argument("--set", help="test or holdout/NAME (default: the headline holdout)")
    parser.add_argument("--out", type=Path, default=Path("var/bench/errors.png"))
    parser.add_argument("--limit", type=int, default=144, help="at most this many pictures")
    args = parser.parse_args(argv)

    characters = (args.model_dir / "labels.txt").read_text().strip()
    data = load_nist(labels=LabelSet(characters))
    sets = nist_sets(data)
    name = args.set or f"holdout/{main_holdout(data)}"
    if name not in sets:
        parser.error(f"no set {name!r}; there are: {', '.join(sets)}")
    images, labels = sets[name]
    probabilities = onnx_probabilities(args.model_dir / "model.onnx", images)
    sheet, misread = error_sheet(images, labels, probabilities, characters, args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    shown = min(misread, args.limit)
    print(f"{name}: {misread} of {len(labels)} misread; {shown} on {args.out}")


if __name__ == "__main__":
    main()
