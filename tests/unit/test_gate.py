"""The gate, as a pure function: every branch, without a database."""

from core.model_report import ClassScore, Metrics
from domain.gate import GateRules, Scores, class_allowance, gate

RULES = GateRules(max_nist_drop=0.005, max_class_drop=0.03, min_class_images=50)
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
    assert {"NIST test vs baseline", "NIST test vs active model", "class"} <= names
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


def test_a_class_that_loses_more_than_chance_allows_is_rejected() -> None:
    # Overall as good, but '1' falls from 99% to 90% on 400 images.
    decision = gate(scores(0.90, **{"1": 0.90}), ACTIVE, BASELINE, RULES)
    assert not decision.promote
    assert "class '1' accuracy 0.9000 is below the active model's 0.9900" in decision.reason


def test_a_class_drop_within_chance_on_few_images_is_not_rejected() -> None:
    # 'f' on 71 images: 49% -> 44% is what two models of that accuracy differ by chance.
    decision = gate(scores(0.90, f=0.44), ACTIVE, BASELINE, RULES)
    assert decision.promote
    (f_check,) = [c for c in decision.checks if "'f'" in c.detail]
    assert f_check.allowed_drop is not None and f_check.allowed_drop > 0.05


def test_classes_below_the_minimum_count_are_not_compared() -> None:
    decision = gate(scores(0.90, x=0.0), ACTIVE, BASELINE, RULES)
    assert decision.promote
    assert not [c for c in decision.checks if "'x'" in c.detail]


def test_the_class_allowance_has_the_configured_floor() -> None:
    assert class_allowance(0.999, 0.999, 10_000, z=3.0, floor=0.03) == 0.03
    assert class_allowance(0.5, 0.5, 50, z=3.0, floor=0.03) > 0.25


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
