"""The gate: whether a trained candidate may replace the serving model. A pure function of the
models' scores on the same sets, so every branch is tested without a database.

Three references, because each one alone lets the model slide:
- the baseline (the bundled model, or the version an admin blessed): NIST test and holdout may
  never fall more than GATE_MAX_NIST_DROP below it, however many retrains follow each other;
- the active model: the same allowance, so one retrain cannot spend the whole margin at once;
- per class of the NIST test split (classes with at least GATE_MIN_CLASS_IMAGES images),
  against the baseline and against the active model: both models read the same images, so a
  paired test decides (McNemar's exact test on the images one reads right and the other wrong,
  Holm's correction over every class and both references at a 5% family-wise error): a class
  is refused when it loses significantly and by at least GATE_MAX_CLASS_DROP. Against the
  baseline, so that a class cannot slide a little at each promotion;
- the trusted evaluation samples: not worse than the active model.
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.model_report import ClassScore, Metrics


@dataclass(frozen=True)
class Outcomes:
    """What a model read right, image by image, on the NIST test split: the same images, in
    the same order, for every model a run compares."""

    truth: np.ndarray  # (N,) the class of each image (its character)
    correct: np.ndarray  # (N,) bool
    predicted: np.ndarray | None = None  # (N,) what it read (its character)


@dataclass(frozen=True)
class Scores:
    """One model's scores on the sets the gate compares."""

    metrics: Metrics
    test_per_class: dict[str, ClassScore] = field(default_factory=dict)
    test_outcomes: Outcomes | None = None


@dataclass(frozen=True)
class GateRules:
    """The gate's allowances; Settings (GATE_*) is their one source (worker.training.gate_rules)."""

    max_nist_drop: float
    max_class_drop: float  # a significant loss smaller than this is let through
    min_class_images: int
    class_false_alarm: float = 0.05  # chance that some class of an unchanged model is refused


@dataclass(frozen=True)
class Check:
    """One comparison the gate made, with its figures (stored on the run, shown in the page)."""

    name: str
    passed: bool
    candidate: float | None
    reference: float | None
    allowed_drop: float | None
    detail: str
    label: str | None = None  # the class, for a class check


@dataclass(frozen=True)
class GateDecision:
    """The gate's result, the one type for it: the worker sets `gated_against` (the version
    active when the candidate was judged) and domain.registry acts on it."""

    promote: bool
    reason: str
    checks: list[Check] = field(default_factory=list)
    gated_against: int | None = None

    def checks_json(self) -> list[dict[str, Any]]:
        return [asdict(check) for check in self.checks]


def gate(
    candidate: Scores, active: Scores | None, baseline: Scores | None, rules: GateRules
) -> GateDecision:
    """Promote only a candidate that passes every check against the baseline and the active
    model (all scored on the same NIST test split, holdout slice and evaluation samples)."""
    if active is None and baseline is None:
        return GateDecision(True, "no active model or baseline to compare with")
    checks: list[Check] = []
    references = {"baseline": baseline, "active model": active}
    for name, reference in references.items():
        if reference is not None:
            checks += nist_checks(candidate.metrics, reference.metrics, name, rules.max_nist_drop)
    checks += class_checks(candidate, references, rules)
    if active is not None:
        checks += evaluation_sample_checks(candidate.metrics, active.metrics)
    failed = [check for check in checks if not check.passed]
    if failed:
        return GateDecision(False, "; ".join(check.detail for check in failed), checks)
    summary = [c.detail for c in checks if not c.name.startswith("class")]
    return GateDecision(True, "; ".join(summary), checks)


def nist_checks(candidate: Metrics, reference: Metrics, against: str, drop: float) -> list[Check]:
    """NIST test accuracy, and the holdout slice when both were scored on the same one, may
    fall at most `drop` below the reference."""
    pairs = [("NIST test", candidate.test_accuracy, reference.test_accuracy)]
    if (
        candidate.holdout_accuracy is not None
        and reference.holdout_accuracy is not None
        and candidate.holdout_slice == reference.holdout_slice
    ):
        pairs.append(("NIST holdout", candidate.holdout_accuracy, reference.holdout_accuracy))
    checks = []
    for set_name, ours, theirs in pairs:
        passed = ours >= theirs - drop
        verb = "within" if passed else "below"
        checks.append(
            Check(
                name=f"{set_name} vs {against}",
                passed=passed,
                candidate=ours,
                reference=theirs,
                allowed_drop=drop,
                detail=f"{set_name} accuracy {ours:.4f} is {verb} the {against}'s "
                f"{theirs:.4f} minus {drop:.4f}",
            )
        )
    return checks


def binomial_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2): McNemar's exact one-sided p-value, with
    `successes` the images only the reference reads right among `trials` discordant ones."""
    if successes <= 0:
        return 1.0
    total = sum(math.comb(trials, k) for k in range(successes, trials + 1))
    return total / 2**trials


@dataclass(frozen=True)
class PairedClass:
    """One class, one reference: the images where the two models disagree."""

    label: str
    against: str
    images: int
    candidate: float  # accuracy
    reference: float
    worse: int  # read right by the reference only
    better: int  # read right by the candidate only
    p_value: float


def _paired(candidate: Outcomes, reference: Outcomes, against: str, rules: GateRules):
    """Per class with enough images: accuracies and the discordant pairs."""
    if len(candidate.truth) != len(reference.truth) or not np.array_equal(
        candidate.truth, reference.truth
    ):
        raise ValueError("the outcomes compared must be on the same images, in the same order")
    results = []
    for label in sorted(set(candidate.truth.tolist())):
        mask = candidate.truth == label
        images = int(mask.sum())
        if images < rules.min_class_images:
            continue
        ours, theirs = candidate.correct[mask], reference.correct[mask]
        worse, better = int((theirs & ~ours).sum()), int((ours & ~theirs).sum())
        results.append(
            PairedClass(
                str(label),
                against,
                images,
                float(ours.mean()),
                float(theirs.mean()),
                worse,
                better,
                binomial_tail(worse, worse + better),
            )
        )
    return results


def class_checks(
    candidate: Scores, references: dict[str, Scores | None], rules: GateRules
) -> list[Check]:
    """Per class of the NIST test split, against each reference, a paired test; Holm's
    step-down correction over all of them keeps the chance that some class of an unchanged
    model is refused at `class_false_alarm`."""
    if candidate.test_outcomes is None:
        return []
    tests = [
        result
        for against, reference in references.items()
        if reference is not None and reference.test_outcomes is not None
        for result in _paired(candidate.test_outcomes, reference.test_outcomes, against, rules)
    ]
    significant = {id(test) for test in _holm(tests, rules.class_false_alarm)}
    checks = []
    for test in tests:
        drop = test.reference - test.candidate
        refused = id(test) in significant and drop >= rules.max_class_drop
        verb = "significantly below" if refused else "not significantly below"
        checks.append(
            Check(
                name=f"class vs {test.against}",
                passed=not refused,
                candidate=round(test.candidate, 4),
                reference=round(test.reference, 4),
                allowed_drop=rules.max_class_drop,
                detail=f"class {test.label!r} accuracy {test.candidate:.4f} is {verb} the "
                f"{test.against}'s {test.reference:.4f} ({test.images} NIST test images; "
                f"{test.worse} read right only by the {test.against}, {test.better} only by "
                f"the candidate; McNemar p={test.p_value:.2g})",
                label=test.label,
            )
        )
    return checks


def _holm(tests: list[PairedClass], alpha: float) -> list[PairedClass]:
    """The tests Holm's step-down procedure rejects at family-wise level `alpha`."""
    rejected = []
    for rank, test in enumerate(sorted(tests, key=lambda t: t.p_value)):
        if test.p_value > alpha / (len(tests) - rank):
            break
        rejected.append(test)
    return rejected


def evaluation_sample_checks(candidate: Metrics, active: Metrics) -> list[Check]:
    ours, theirs = candidate.evaluation_samples_accuracy, active.evaluation_samples_accuracy
    if ours is None or theirs is None:
        return []
    passed = ours >= theirs
    return [
        Check(
            name="evaluation samples vs active model",
            passed=passed,
            candidate=ours,
            reference=theirs,
            allowed_drop=0.0,
            detail=f"accuracy on {candidate.evaluation_samples} evaluation samples {ours:.4f} "
            f"is {'not below' if passed else 'below'} the active model's {theirs:.4f}",
        )
    ]
