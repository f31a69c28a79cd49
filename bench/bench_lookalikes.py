"""How much of a model's error is between characters that look alike (issue 15).

    .venv/bin/python -m bench.bench_lookalikes [--model-dir trainer/bundled]

Reads a model's report.json (its confusion matrices on the NIST test split and holdout slices)
and counts the errors that stay inside a group of look-alikes (O/0, I/1/L, f/F, q/9/g, S/5,
Z/2, Y/4): what no single-character model can settle from the shape alone, and so the ceiling
a wider network cannot lift.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import BenchRun, bench_parser, report
from testkit.tables import markdown_table

LOOKALIKES = ("O0", "I1L", "fF", "q9g", "S5", "Z2", "Y4")


def lookalike_errors(confusion: np.ndarray, labels: str) -> int:
    inside = 0
    for group in LOOKALIKES:
        index = [labels.index(c) for c in group if c in labels]
        block = confusion[np.ix_(index, index)]
        inside += int(block.sum() - np.trace(block))
    return inside


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--model-dir", type=Path, default=Path("trainer/bundled"))
    args = parser.parse_args(argv)
    run = BenchRun(args.wait_quiet)
    model = json.loads((args.model_dir / "report.json").read_text())
    rows = []
    for name, scores in model["evaluation"].items():
        confusion = np.array(scores["confusion"])
        total, right = int(confusion.sum()), int(np.trace(confusion))
        inside = lookalike_errors(confusion, model["labels"])
        rows.append(
            [
                name,
                f"{total:,}",
                f"{right / total:.2%}",
                f"{total - right:,}",
                f"{inside:,} ({inside / max(total - right, 1):.0%})",
                f"{(right + inside) / total:.2%}",
            ]
        )
    headers = [
        "set",
        "images",
        "accuracy",
        "errors",
        "errors between look-alikes",
        "accuracy if those were right",
    ]
    table = f"{args.model_dir}, groups {', '.join(LOOKALIKES)}:\n\n" + markdown_table(headers, rows)
    report(run, "lookalikes", [table], {"rows": rows})


if __name__ == "__main__":
    main()
