"""The gate, as a pure function: every branch, without a database."""

import numpy as np
import pytest

from core.model_report import ClassScore, Metrics
from domain.gate import GateRules, Outcomes, Scores, binomial_tail, gate

RULES = GateRules(max_nist_drop=0.005, max_class_drop=0.01, min_class_images=50)
CLASSES = {"1": 400, "7": 400, "f": 71, "x": 20}
ACTIVE_CLASSES = {"1": 0.99, "7": 0.98, "f": 0.49, "x": 0.90}


def metrics(
    test: float, evaluation: float | None = 0.80, holdout: float | None = 0.8853
) -> Metrics:
    return Metrics(
        test_accuracy=test,
        holdout_slice="writers" if holdout is not None else None,
        holdout_accuracy=holdout,
        evaluation_samples=20 if evaluation is not None else 0,
        evaluation_samples_accuracy=evaluation,
    )


def scores(
    test: float, evaluation: float | None = 0.80, holdout: float | None = 0.8853, **per_class: float
) -> Scores:
    accuracy = ACTIVE_CLASSES | per_class
    return Scores(
        metrics(test, evaluation, holdout),
        {c: ClassScore(accuracy=accuracy[c], images=n) for c, n in CLASSES.items()},
    )


ACTIVE = scores(0.90)
BASELINE = scores(0.90)


def test_first_model_is_promoted_with_nothing_to_compare() -> None:
    decision = gate(scores(0.10), None, None, RULES)
    assert decision.promote and "no active model" in decision.reason


def test_a_candidate_within_the_nist_allowance_and_as_good_on_samples_is_promoted() -> None:
    decision = gate(scores(0.896), ACTIVE, BASELINE, RULES)
    assert decision.promote
    assert "NIST test accuracy 0.8960 is within the baseline's 0.9000" in decision.reason
    names = {check.name for check in decision.checks}
    assert {"NIST test vs baseline", "NIST test vs active model"} <= names
    assert all(check.passed for check in decision.checks)


def test_a_candidate_below_the_nist_allowance_is_rejected() -> None:
    decision = gate(scores(0.894, 0.95), ACTIVE, BASELINE, RULES)
    assert not decision.promote
    assert "NIST test accuracy 0.8940 is below the active model's 0.9000" in decision.reason


def test_drift_is_bounded_by_the_baseline_whatever_the_active_model() -> None:
    # The sequence: each retrain within 0.5 point of the one before, four in a row.
    active = ACTIVE
    served = [active.metrics.test_accuracy]
    for _ in range(4):
        candidate = scores(active.metrics.test_accuracy - 0.004)
        if gate(candidate, active, BASELINE, RULES).promote:
            active = candidate
        served.append(active.metrics.test_accuracy)
    assert min(served) >= BASELINE.metrics.test_accuracy - RULES.max_nist_drop
    assert served[1] < served[0]  # the first step, within the allowance, was promoted
    refused = gate(scores(0.892), scores(0.896), BASELINE, RULES)
    assert not refused.promote and "below the baseline's 0.9000" in refused.reason


def test_a_candidate_below_the_baseline_on_the_holdout_slice_is_rejected() -> None:
    decision = gate(scores(0.91, holdout=0.8711), scores(0.91, holdout=0.8711), BASELINE, RULES)
    assert not decision.promote
    assert "NIST holdout accuracy 0.8711 is below the baseline's 0.8853" in decision.reason


def test_a_candidate_worse_on_evaluation_samples_is_rejected() -> None:
    decision = gate(scores(0.95, 0.75), ACTIVE, BASELINE, RULES)
    assert not decision.promote
    assert "20 evaluation samples 0.7500 is below the active model's 0.8000" in decision.reason


def test_without_evaluation_samples_only_nist_decides() -> None:
    decision = gate(scores(0.90, None), ACTIVE, BASELINE, RULES)
    assert decision.promote
    assert not [c for c in decision.checks if c.name.startswith("evaluation")]


def outcomes(changes: dict[str, tuple[int, int]] | None = None) -> Outcomes:
    """The reference's outcomes (ACTIVE_CLASSES' accuracies on CLASSES' images), with
    `changes[label] = (lost, gained)`: images it read right now wrong, and wrong now right."""
    truth, correct = [], []
    for label, images in CLASSES.items():
        right = np.arange(images) < round(ACTIVE_CLASSES[label] * images)
        lost, gained = (changes or {}).get(label, (0, 0))
        right[:lost] = False
        right[images - gained :] = True
        truth += [label] * images
        correct += right.tolist()
    return Outcomes(np.array(truth), np.array(correct))


def with_outcomes(base: Scores, result: Outcomes) -> Scores:
    return Scores(base.metrics, base.test_per_class, result)


def test_a_class_that_loses_significantly_is_rejected_against_either_reference() -> None:
    # Overall as good, but '1' falls from 99% to 96% on 400 images: 14 lost, 2 gained.
    candidate = with_outcomes(scores(0.90), outcomes({"1": (14, 2)}))
    for active, baseline in ((ACTIVE, BASELINE), (ACTIVE, None), (None, BASELINE)):
        references = [with_outcomes(r, outcomes()) if r else None for r in (active, baseline)]
        decision = gate(candidate, *references, RULES)
        assert not decision.promote, decision.reason
        assert "class '1' accuracy 0.9600 is significantly below" in decision.reason


def test_a_three_point_loss_on_900_images_is_caught_and_noise_is_not() -> None:
    # The case: a class of ~900 images, a real 3-point loss (40 lost, 13 gained)...
    global CLASSES
    saved = CLASSES
    CLASSES = {**saved, "4": 900}
    ACTIVE_CLASSES["4"] = 0.96
    try:
        reference = with_outcomes(ACTIVE, outcomes())
        lost = with_outcomes(scores(0.90), outcomes({"4": (40, 13)}))
        assert not gate(lost, reference, None, RULES).promote
        # ... and two models of equal quality that disagree on 30 images each way.
        noise = with_outcomes(scores(0.90), outcomes({"4": (30, 30), "1": (3, 1)}))
        assert gate(noise, reference, None, RULES).promote
    finally:
        CLASSES = saved
        del ACTIVE_CLASSES["4"]


def test_a_significant_loss_below_the_floor_is_let_through() -> None:
    # A small real loss on a big class: 4 of 400 lost (1 point), under a 2-point floor.
    rules = GateRules(max_nist_drop=0.005, max_class_drop=0.02, min_class_images=50)
    candidate = with_outcomes(scores(0.90), outcomes({"1": (4, 0)}))
    decision = gate(candidate, with_outcomes(ACTIVE, outcomes()), None, rules)
    assert decision.promote, decision.reason


def test_classes_below_the_minimum_count_are_not_compared() -> None:
    candidate = with_outcomes(scores(0.90), outcomes({"x": (18, 0)}))
    decision = gate(candidate, with_outcomes(ACTIVE, outcomes()), None, RULES)
    assert decision.promote
    assert not [c for c in decision.checks if "'x'" in c.detail]


def test_mcnemar_exact_tail() -> None:
    assert binomial_tail(0, 10) == 1.0
    assert binomial_tail(10, 10) == 2**-10
    assert abs(binomial_tail(5, 10) - 0.623046875) < 1e-12


def test_outcomes_on_other_images_are_refused() -> None:
    other = Outcomes(np.array(["1"] * 3), np.array([True] * 3))
    with pytest.raises(ValueError, match="same images"):
        gate(with_outcomes(scores(0.9), other), with_outcomes(ACTIVE, outcomes()), None, RULES)


def test_holdout_scores_on_different_slices_are_not_compared() -> None:
    other = scores(0.90, holdout=0.50)
    other = Scores(
        other.metrics.model_copy(update={"holdout_slice": "other"}), other.test_per_class
    )
    decision = gate(other, ACTIVE, BASELINE, RULES)
    assert decision.promote
    assert not [c for c in decision.checks if "holdout" in c.name]


def test_without_a_baseline_the_active_model_still_gates() -> None:
    assert not gate(scores(0.80), ACTIVE, None, RULES).promote
    assert gate(scores(0.90), ACTIVE, None, RULES).promote
