"""Label hygiene (issue 14): how often the suspect rule flags an upload, and what a batch of
mislabelled uploads does to a retrain with and without it.

    .venv/bin/python -m bench.bench_label_hygiene [--count 300] [--retrain]

1. The rule (SUSPECT_MAX_LABEL_PROBABILITY / SUSPECT_MIN_OTHER_PROBABILITY, the bundled model)
   on the `check` draw of testkit's corpus (NIST holdout characters drawn as every kind of
   picture users send): the share flagged with the right label (good uploads held back) and
   with a wrong one (mislabels caught); then NIST `1`s labelled `7`, and a new style (`3`, `4`,
   `7` turned a quarter) with right labels: what the rule cannot tell from mislabels.
2. `--retrain`: a warm retrain with the production settings on 100 good uploads and 30 clean
   `1`s labelled `7`, once with every upload (no hygiene) and once without the suspects; the
   per-class figures of `1` and `7` on the NIST test split and holdout slice, and the gate's
   decision against the bundled model.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.common import BenchRun, bench_parser, report
from domain.gate import gate
from domain.registry import BUNDLED_MODEL_DIR
from testkit.tables import markdown_table
from trainer.evaluate import onnx_probabilities
from worker.training import gate_rules, retrain_config

if TYPE_CHECKING:
    from core.labels import LabelSet
    from core.model_report import SetScore
    from trainer.data import NistData
    from trainer.pipeline import TrainedArtifacts


def suspects(probabilities: np.ndarray, characters: str, labels: Sequence[str]) -> np.ndarray:
    """Which samples the rule flags, given the bundled model's probabilities and their labels."""
    from core.config import get_settings
    from domain.samples import opinion_of, suspect_rule

    rule = suspect_rule(get_settings())
    return np.array(
        [
            opinion_of(p, characters, label, rule).suspect
            for p, label in zip(probabilities, labels, strict=True)
        ]
    )


def flag_rate(probabilities: np.ndarray, characters: str, labels: Sequence[str]) -> str:
    return f"{suspects(probabilities, characters, labels).mean():.1%}"


def wrong_labels(truth: np.ndarray, characters: str, rng: np.random.Generator) -> list[str]:
    shift = rng.integers(1, len(characters), size=len(truth))
    return [characters[(t + s) % len(characters)] for t, s in zip(truth, shift, strict=True)]


def rule_rows(count: int) -> list[list[object]]:
    from testkit.corpus import bundled_session, make_corpus, read_pictures
    from testkit.nist import training_characters

    session = bundled_session()
    name = session.get_inputs()[0].name
    characters = _characters()
    rng = np.random.default_rng(0)

    def probabilities(pictures: np.ndarray) -> np.ndarray:
        return session.run(None, {name: pictures})[0]

    corpus = make_corpus("check", count)
    truth = [characters[i] for i in corpus.labels]
    rows: list[list[object]] = []
    for kind, pictures in corpus.pictures.items():
        p = probabilities(read_pictures(pictures))
        rows.append(
            [
                kind,
                len(truth),
                flag_rate(p, characters, truth),
                flag_rate(p, characters, wrong_labels(corpus.labels, characters, rng)),
            ]
        )
    ones, _ = training_characters(count, character="1")
    p = probabilities(_glyphs(ones))
    rows.append(["NIST `1` labelled `7`", count, "-", flag_rate(p, characters, ["7"] * count)])
    rotated, labels = [], []
    for c in "347":
        images, _ = training_characters(count // 3, character=c)
        rotated += [np.rot90(i).copy() for i in images]
        labels += [c] * len(images)
    p = probabilities(_glyphs(np.stack(rotated)))
    name = "new style: `3` `4` `7` turned a quarter"
    rows.append([name, len(labels), flag_rate(p, characters, labels), "-"])
    return rows


def _characters() -> str:
    from core.config import get_settings

    return get_settings().labels


def _glyphs(images: np.ndarray) -> np.ndarray:
    from core.preprocessing import MODEL_INPUT_SHAPE, preprocess_image

    return np.stack([preprocess_image(i) for i in images]).reshape(-1, *MODEL_INPUT_SHAPE)


@dataclass
class Poisoning:
    """100 good uploads then 30 NIST `1`s labelled `7`, as the model sees them."""

    glyphs: np.ndarray  # (130, 28, 28) uint8: the preprocessing's output, as training sees it
    labels: list[str]
    suspect: np.ndarray  # what the rule flags, by the bundled model

    @staticmethod
    def make(characters: str) -> "Poisoning":
        from testkit.nist import training_characters

        good, good_labels = training_characters(100, offset=5000)
        poison, _ = training_characters(30, character="1")
        glyphs = np.rint(_glyphs(np.concatenate([good, poison]))[..., 0] * 255).astype(np.uint8)
        labels = [*good_labels, *["7"] * 30]
        bundled = onnx_probabilities(BUNDLED_MODEL_DIR / "model.onnx", glyphs)
        return Poisoning(glyphs, labels, suspects(bundled, characters, labels))

    def read_as_seven(self, onnx: "bytes | Path", characters: str) -> str:
        """Share of the 30 mislabelled pictures a model reads as `7`: what was memorised."""
        predicted = onnx_probabilities(onnx, self.glyphs[100:]).argmax(axis=1)
        return f"{np.mean(predicted == characters.index('7')):.0%}"


def retrain_rows() -> tuple[list[list[object]], dict[str, object]]:
    """The poisoning experiment: the same warm retrain with and without the suspects, judged
    by the gate against the bundled model (both baseline and active)."""
    from core.config import get_settings
    from core.labels import LabelSet
    from core.model_report import headline_metrics
    from domain.gate import Scores
    from trainer.data import load_nist
    from trainer.evaluate import evaluate_sets, main_holdout, nist_sets

    settings = get_settings()
    labels = LabelSet(settings.labels)
    data = load_nist(settings.nist_data_dir, labels)
    poisoning = Poisoning.make(labels.characters)
    bundled = evaluate_sets(BUNDLED_MODEL_DIR / "model.onnx", nist_sets(data, False), labels)
    reference = Scores(headline_metrics(bundled, main_holdout(data)), bundled["test"].per_class)
    holdout = f"holdout/{main_holdout(data)}"
    read = poisoning.read_as_seven(BUNDLED_MODEL_DIR / "model.onnx", labels.characters)
    rows = [_row("bundled model (before)", bundled, holdout, ["-", "-", read])]
    figures: dict[str, object] = {
        "suspect_good": int(poisoning.suspect[:100].sum()),
        "suspect_poison": int(poisoning.suspect[100:].sum()),
    }
    arms = {
        "no hygiene: every upload": np.ones(130, bool),
        "suspects held back": ~poisoning.suspect,
    }
    for arm, keep in arms.items():
        start = time.perf_counter()
        artifacts = warm_retrain(data, poisoning, keep, labels)
        seconds = time.perf_counter() - start
        scores = artifacts.report.evaluation
        candidate = Scores(artifacts.report.metrics, scores["test"].per_class)
        decision = gate(candidate, reference, reference, gate_rules(settings))
        verdict = "promoted" if decision.promote else "rejected"
        why = "" if decision.promote else decision.reason
        read = poisoning.read_as_seven(artifacts.onnx, labels.characters)
        name = f"{arm} ({int(keep[100:].sum())} of 30 mislabelled trained, {seconds:.0f} s)"
        rows.append(_row(name, scores, holdout, [verdict, why, read]))
        figures[arm] = {"promote": decision.promote, "reason": decision.reason, "read_7": read}
    return rows, figures


def warm_retrain(
    data: "NistData", poisoning: Poisoning, keep: np.ndarray, labels: "LabelSet"
) -> "TrainedArtifacts":
    """What the worker does for a warm retrain (production settings) on the kept uploads."""
    from core.config import get_settings
    from domain.samples import upload_copies
    from trainer.config import ExtraSamples
    from trainer.pipeline import train_and_evaluate

    settings = get_settings()
    config = retrain_config(settings, warm=True)
    nist_images = min(config.max_train or len(data.y_train), len(data.y_train))
    copies = upload_copies(
        int(keep.sum()), nist_images, settings.upload_share, settings.max_upload_oversample
    )
    classes = np.array([labels.index(c) for c, k in zip(poisoning.labels, keep, strict=True) if k])
    return train_and_evaluate(
        data,
        config,
        extra=ExtraSamples(poisoning.glyphs[keep], classes, copies),
        initial_weights=(BUNDLED_MODEL_DIR / "model.weights.h5").read_bytes(),
        every_slice=False,
    )


def _row(name: str, scores: dict[str, "SetScore"], holdout: str, rest: list[str]) -> list[object]:
    def accuracy(set_name: str, c: str) -> str:
        return f"{scores[set_name].per_class[c].accuracy:.1%}"

    return [
        name,
        f"{scores['test'].accuracy:.2%}",
        accuracy("test", "1"),
        accuracy("test", "7"),
        accuracy(holdout, "1"),
        accuracy(holdout, "7"),
        *rest,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--count", type=int, default=300, help="characters per kind")
    parser.add_argument("--retrain", action="store_true", help="also the poisoning retrains")
    args = parser.parse_args(argv)

    run = BenchRun(args.wait_quiet)
    rule = suspect_rule_text()
    tables = [
        f"The suspect rule ({rule}), bundled model:\n\n"
        + markdown_table(
            ["pictures", "images", "flagged with the right label", "flagged with a wrong label"],
            rule_rows(args.count),
        )
    ]
    results: dict[str, object] = {"args": vars(args)}
    if args.retrain:
        rows, figures = retrain_rows()
        results["retrain"] = figures
        tables.append(
            "Warm retrain (production settings) on 100 good uploads + 30 NIST `1`s labelled "
            f"`7` ({figures['suspect_poison']}/30 and {figures['suspect_good']}/100 flagged "
            "suspect):\n\n"
            + markdown_table(
                [
                    "model",
                    "NIST test",
                    "test `1`",
                    "test `7`",
                    "holdout `1`",
                    "holdout `7`",
                    "gate vs bundled",
                    "why refused",
                    "the 30 mislabelled read as `7`",
                ],
                rows,
            )
        )
    report(run, "label_hygiene", tables, results)


def suspect_rule_text() -> str:
    from core.config import get_settings

    s = get_settings()
    return (
        f"p(label) < {s.suspect_max_label_probability} and p(other) ≥ "
        f"{s.suspect_min_other_probability}"
    )


if __name__ == "__main__":
    main()
