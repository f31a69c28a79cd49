"""What a version's training run measured, as the dashboard and GET /v1/models say it; a
run's phases on its progress bar."""

import pytest

from domain.registry import measured_change


def test_a_change_is_the_candidates_accuracy_minus_each_references_on_the_same_images() -> None:
    change = measured_change(
        {
            "candidate": {
                "test_accuracy": 0.9,
                "holdout_accuracy": 0.88,
                "evaluation_samples_accuracy": 0.75,
            },
            "active": {
                "test_accuracy": 0.89,
                "holdout_accuracy": 0.885,
                "evaluation_samples_accuracy": 0.5,
            },
            "active_version": 3,
            "baseline": {"test_accuracy": 0.88, "holdout_accuracy": 0.87},
            "baseline_version": 1,
            "training_samples": 40,
            "evaluation_samples": 12,
        }
    )
    assert change is not None
    assert change.previous is not None and change.baseline is not None
    assert change.previous.against == 3
    assert change.previous.test == pytest.approx(0.01)
    assert change.previous.holdout == pytest.approx(-0.005)
    assert change.previous.evaluation == pytest.approx(0.25)
    assert change.baseline.against == 1
    assert change.baseline.evaluation is None  # the baseline's figure is missing: none
    assert (change.training_uploads, change.evaluation_uploads) == (40, 12)
    assert change.notes == []


def test_a_missing_figure_says_why() -> None:
    change = measured_change(
        {"candidate": {"test_accuracy": 0.9}, "training_samples": 5, "evaluation_samples": 0}
    )
    assert change is not None
    assert change.previous is None and change.baseline is None
    assert any("nothing to compare with" in note for note in change.notes)
    assert any("evaluation uploads" in note for note in change.notes)


def test_a_version_no_run_made_has_no_change() -> None:
    assert measured_change(None) is None
    assert measured_change({}) is None


def test_every_phase_of_a_run_has_its_place_on_the_progress_bar_in_order() -> None:
    from typing import get_args

    from db.models import RunPhase
    from trainer.pipeline import Step
    from worker.training import PHASE_STARTS

    assert list(PHASE_STARTS) == list(RunPhase)  # each phase, in the order a run goes through
    starts = list(PHASE_STARTS.values())
    assert starts == sorted(starts) and len(set(starts)) == len(starts) and starts[-1] < 1.0
    assert {RunPhase(step) for step in get_args(Step)} <= set(RunPhase)  # the trainer's steps
