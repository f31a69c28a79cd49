"""The gate: whether a trained candidate may replace the serving model. A pure function of the
models' scores on the same sets, so every branch is tested without a database.

Three references, because each one alone lets the model slide:
- the baseline (the bundled model, or the version an admin blessed): NIST test and holdout may
  never fall more than GATE_MAX_NIST_DROP below it, however many retrains follow each other;
- the active model: the same allowance, so one retrain cannot spend the whole margin at once;
  no class of the NIST test split may lose more than GATE_MAX_CLASS_DROP (classes with at
  least GATE_MIN_CLASS_IMAGES images), unless the loss is within what chance gives two models
  of that accuracy on that many images (a one-sided test, Bonferroni over the classes checked,
  so that among 47 classes one does not flap by luck);
- the trusted evaluation samples: not worse than the active model.
"""

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

from core.model_report import ClassScore, Metrics


@dataclass(frozen=True)
class Scores:
    """One model's scores on the sets the gate compares."""

    metrics: Metrics
    test_per_class: dict[str, ClassScore] = field(default_factory=dict)


@dataclass(frozen=True)
class GateRules:
    max_nist_drop: float
    max_class_drop: float = 0.03
    min_class_images: int = 50
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


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    checks: list[Check] = field(default_factory=list)

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
    for name, reference in (("baseline", baseline), ("active model", active)):
        if reference is not None:
            checks += nist_checks(candidate.metrics, reference.metrics, name, rules.max_nist_drop)
    if active is not None:
        checks += class_checks(candidate.test_per_class, active.test_per_class, rules)
        checks += evaluation_sample_checks(candidate.metrics, active.metrics)
    failed = [check for check in checks if not check.passed]
    if failed:
        return GateDecision(False, "; ".join(check.detail for check in failed), checks)
    return GateDecision(True, "; ".join(c.detail for c in checks if c.name != "class"), checks)


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


def class_allowance(ours: float, theirs: float, images: int, z: float, floor: float) -> float:
    """The drop a class may show: `floor`, or more where chance alone moves two models of this
    accuracy on `images` images by that much (z standard errors of a difference of two
    proportions, pooled)."""
    pooled = (ours + theirs) / 2
    standard_error = math.sqrt(2 * pooled * (1 - pooled) / images)
    return max(floor, z * standard_error)


def class_checks(
    candidate: dict[str, ClassScore], active: dict[str, ClassScore], rules: GateRules
) -> list[Check]:
    """Per class of the NIST test split, against the active model; tiny classes are skipped."""
    compared = [
        c
        for c, score in active.items()
        if c in candidate and score.images >= rules.min_class_images
    ]
    if not compared:
        return []
    z = NormalDist().inv_cdf(1 - rules.class_false_alarm / len(compared))
    checks = []
    for label in compared:
        ours, theirs = candidate[label].accuracy, active[label].accuracy
        images = active[label].images
        allowed = class_allowance(ours, theirs, images, z, rules.max_class_drop)
        passed = ours >= theirs - allowed
        verb = "within" if passed else "below"
        checks.append(
            Check(
                name="class",
                passed=passed,
                candidate=ours,
                reference=theirs,
                allowed_drop=round(allowed, 4),
                detail=f"class {label!r} accuracy {ours:.4f} is {verb} the active model's "
                f"{theirs:.4f} minus {allowed:.4f} ({images} NIST test images)",
            )
        )
    return checks


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
