"""Which of the preprocessing's remaining rules the bundled model needs: each switched off alone.

    .venv/bin/python -m bench.bench_rules [--count 500] [--split dev check] [--rule TEXT]

Issue 27 keeps in core/preprocessing.py only the steps a model cannot learn. Each row here
reads the whole corpus (testkit/corpus.py, both draws) with one rule of the module switched off
or loosened, by the bundled model as it is (no retrain: a model trained without the rule could
only read more), and prints the change per kind against the module as it is. A rule whose row
moves nothing is a rule to delete; one that costs a kind points is a rule to rework.
"""

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from bench.common import BenchRun, bench_parser, report
from core import preprocessing
from testkit.tables import markdown_table

_BOX = preprocessing._character_box


def _at(where: str, box: Callable[..., Any]) -> Callable[..., Any]:
    """`_character_box` as `box` computes it when called from the function named `where`
    (`_glyph`: on the thumbnail; `_finish`: in the glyph's window), as it is elsewhere."""

    def boxed(strokes: np.ndarray | None, faint: np.ndarray) -> Any:
        if sys._getframe(1).f_code.co_name != where:
            return _BOX(strokes, faint)
        return box(strokes, faint)

    return boxed


def _far_kept(strokes: np.ndarray | None, faint: np.ndarray) -> Any:
    """The box with pieces however far from the largest one."""
    near = preprocessing._NEAR
    preprocessing._NEAR = float("inf")
    try:
        return _BOX(strokes, faint)
    finally:
        preprocessing._NEAR = near


def _no_faint(strokes: np.ndarray | None, faint: np.ndarray) -> Any:
    """The box with no piece joined to another by faint ink."""
    return _BOX(strokes, np.zeros_like(faint))


# What each row changes in the module (its names, replaced for the row's reading).
RULES: dict[str, dict[str, Any]] = {
    "printed lines not removed": {"_has_lines": lambda ink: False},
    "the paper around the glyph not taken off": {"_on_local_paper": lambda ink: ink},
    "light never uneven": {"_UNEVEN": float("inf")},
    "faint ink joins no pieces": {"_character_box": _no_faint},
    "faint ink joins no pieces on the thumbnail": {"_character_box": _at("_glyph", _no_faint)},
    "faint ink joins no pieces in the window": {"_character_box": _at("_finish", _no_faint)},
    "far pieces kept": {"_NEAR": float("inf")},
    "far pieces kept on the thumbnail only": {"_character_box": _at("_glyph", _far_kept)},
    "far pieces kept in the window only": {"_character_box": _at("_finish", _far_kept)},
    "far pieces: twice as far kept": {"_NEAR": 2 * preprocessing._NEAR},
}


@contextlib.contextmanager
def replaced(names: dict[str, Any]) -> Iterator[None]:
    saved = {name: getattr(preprocessing, name) for name in names}
    for name, value in names.items():
        setattr(preprocessing, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(preprocessing, name, value)


def rows(scores: dict[str, dict[str, float]], kinds: Sequence[str]) -> list[list[str]]:
    """Per rule: the mean change over the kinds, and each kind moved by a point or more."""
    table = []
    for rule, by_kind in scores.items():
        if rule == "as it is":
            continue
        changes = {k: 100 * (by_kind[k] - scores["as it is"][k]) for k in kinds}
        moved = ", ".join(f"{k} {v:+.1f}" for k, v in changes.items() if abs(v) >= 1.0)
        table.append([rule, f"{np.mean(list(changes.values())):+.2f}", moved or "none"])
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--count", type=int, default=500, help="characters per kind")
    parser.add_argument("--split", nargs="+", default=["dev", "check"], choices=["dev", "check"])
    parser.add_argument("--rule", default="", help="only the rows whose name holds this text")
    args = parser.parse_args(argv)

    from testkit.corpus import accuracy_by_kind, bundled_session, make_corpus, read_pictures

    run = BenchRun(args.wait_quiet)
    session = bundled_session()
    results: dict[str, dict[str, dict[str, float]]] = {}
    tables = []
    for split in args.split:
        corpus = make_corpus(split, args.count)
        scores = {"as it is": accuracy_by_kind(corpus, session, read_pictures)}
        for rule, names in RULES.items():
            if args.rule not in rule:
                continue
            start = time.perf_counter()
            with replaced(names):
                scores[rule] = accuracy_by_kind(corpus, session, read_pictures)
            print(f"# {split}: {rule}: {time.perf_counter() - start:.0f} s", flush=True)
        results[split] = scores
        headers = ["rule switched off", "mean change over the kinds (points)", "kinds moved ≥ 1"]
        tables.append(
            f"{split} draw, {args.count} characters per kind, change in accuracy against the "
            f"module as it is:\n\n" + markdown_table(headers, rows(scores, list(corpus.pictures)))
        )
    report(run, "rules", tables, {"args": vars(args), "accuracy": results})


if __name__ == "__main__":
    main()
