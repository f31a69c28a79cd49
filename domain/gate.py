"""The gate: whether a trained candidate may replace the serving model. A pure function of the
two models' scores on the same sets, so every branch is tested without a database."""

from dataclasses import dataclass

from core.model_report import Metrics


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def gate(candidate: Metrics, active: Metrics | None, max_nist_drop: float) -> GateDecision:
    """Promote only a candidate that is not worse than the active model.

    Both were scored on the same NIST test split, the same NIST holdout slice (writers neither
    model saw) and the same evaluation samples. Each NIST figure may drop by `max_nist_drop`.
    """
    if active is None:
        return GateDecision(True, "no active model to compare with")
    refusal = (
        _nist_test_refusal(candidate, active, max_nist_drop)
        or _holdout_refusal(candidate, active, max_nist_drop)
        or _evaluation_samples_refusal(candidate, active)
    )
    if refusal is not None:
        return GateDecision(False, refusal)
    return GateDecision(
        True,
        f"NIST test accuracy {candidate.test_accuracy:.4f} (active {active.test_accuracy:.4f}, "
        f"allowed drop {max_nist_drop:.4f}), NIST holdout {_holdout_figures(candidate, active)} "
        f"and evaluation-sample accuracy {_figure(candidate.evaluation_samples_accuracy)} "
        f"(active {_figure(active.evaluation_samples_accuracy)}): not worse",
    )


def _nist_test_refusal(candidate: Metrics, active: Metrics, max_nist_drop: float) -> str | None:
    if candidate.test_accuracy >= active.test_accuracy - max_nist_drop:
        return None
    return (
        f"NIST test accuracy {candidate.test_accuracy:.4f} is below the active model's "
        f"{active.test_accuracy:.4f} minus {max_nist_drop:.4f}"
    )


def _comparable_holdout(candidate: Metrics, active: Metrics) -> tuple[float, float] | None:
    """Both models' accuracy on one holdout slice, when both were scored on the same one."""
    ours, theirs = candidate.holdout_accuracy, active.holdout_accuracy
    if ours is None or theirs is None or candidate.holdout_slice != active.holdout_slice:
        return None
    return ours, theirs


def _holdout_refusal(candidate: Metrics, active: Metrics, max_nist_drop: float) -> str | None:
    scores = _comparable_holdout(candidate, active)
    if scores is None or scores[0] >= scores[1] - max_nist_drop:
        return None
    return (
        f"NIST holdout slice {candidate.holdout_slice!r} accuracy {scores[0]:.4f} is below the "
        f"active model's {scores[1]:.4f} minus {max_nist_drop:.4f}"
    )


def _evaluation_samples_refusal(candidate: Metrics, active: Metrics) -> str | None:
    ours, theirs = candidate.evaluation_samples_accuracy, active.evaluation_samples_accuracy
    if ours is None or theirs is None or ours >= theirs:
        return None
    return f"accuracy on evaluation samples {ours:.4f} is below the active model's {theirs:.4f}"


def _holdout_figures(candidate: Metrics, active: Metrics) -> str:
    scores = _comparable_holdout(candidate, active)
    if scores is None:
        return "n/a (not scored on the same slice)"
    return f"{candidate.holdout_slice!r} {scores[0]:.4f} (active {scores[1]:.4f})"


def _figure(value: float | None) -> str:
    return "n/a (no trusted evaluation samples)" if value is None else f"{value:.4f}"
