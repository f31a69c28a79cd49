"""The gate, as a pure function: every branch, without a database."""

from core.model_report import Metrics
from domain.gate import gate

ACTIVE = Metrics(
    test_accuracy=0.90,
    holdout_slice="writers",
    holdout_accuracy=0.8853,
    evaluation_samples=20,
    evaluation_samples_accuracy=0.80,
)


def candidate(
    test: float, evaluation: float | None = 0.80, holdout: float | None = 0.8853
) -> Metrics:
    return Metrics(
        test_accuracy=test,
        holdout_slice="writers" if holdout is not None else None,
        holdout_accuracy=holdout,
        evaluation_samples=20 if evaluation is not None else 0,
        evaluation_samples_accuracy=evaluation,
    )


def test_first_model_is_promoted_with_nothing_to_compare() -> None:
    decision = gate(candidate(0.10), None, max_nist_drop=0.005)
    assert decision.promote and "no active model" in decision.reason


def test_a_candidate_within_the_nist_allowance_and_as_good_on_samples_is_promoted() -> None:
    decision = gate(candidate(0.896, 0.80), ACTIVE, max_nist_drop=0.005)
    assert decision.promote
    assert "0.8960" in decision.reason and "0.9000" in decision.reason


def test_a_candidate_below_the_nist_allowance_is_rejected() -> None:
    decision = gate(candidate(0.894, 0.95), ACTIVE, max_nist_drop=0.005)
    assert not decision.promote
    assert "NIST test accuracy 0.8940" in decision.reason


def test_a_candidate_worse_on_evaluation_samples_is_rejected() -> None:
    decision = gate(candidate(0.95, 0.75), ACTIVE, max_nist_drop=0.005)
    assert not decision.promote
    assert "evaluation samples 0.7500" in decision.reason


def test_without_evaluation_samples_only_nist_decides() -> None:
    assert gate(candidate(0.90, None), ACTIVE, max_nist_drop=0.005).promote


def test_a_candidate_that_drops_more_than_the_allowance_on_the_holdout_slice_is_rejected() -> None:
    # The case: better on the test split, 1.4 points lower on writers it never saw.
    decision = gate(candidate(0.91, 0.80, holdout=0.8711), ACTIVE, max_nist_drop=0.005)
    assert not decision.promote
    assert "holdout slice 'writers' accuracy 0.8711" in decision.reason
    assert "0.8853" in decision.reason


def test_a_holdout_drop_within_the_allowance_is_promoted() -> None:
    decision = gate(candidate(0.90, 0.80, holdout=0.8810), ACTIVE, max_nist_drop=0.005)
    assert decision.promote
    assert "'writers' 0.8810 (active 0.8853)" in decision.reason


def test_holdout_scores_on_different_slices_are_not_compared() -> None:
    other_slice = candidate(0.90, 0.80, holdout=0.50).model_copy(update={"holdout_slice": "other"})
    decision = gate(other_slice, ACTIVE, max_nist_drop=0.005)
    assert decision.promote
    assert "not scored on the same slice" in decision.reason
