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

    Both were scored on the same NIST test split and the same evaluation samples.
    """
    if active is None:
        return GateDecision(True, "no active model to compare with")
    nist_floor = active.test_accuracy - max_nist_drop
    if candidate.test_accuracy < nist_floor:
        return GateDecision(
            False,
            f"NIST test accuracy {candidate.test_accuracy:.4f} is below the active model's "
            f"{active.test_accuracy:.4f} minus {max_nist_drop:.4f}",
        )
    ours, theirs = candidate.evaluation_samples_accuracy, active.evaluation_samples_accuracy
    if ours is not None and theirs is not None and ours < theirs:
        return GateDecision(
            False,
            f"accuracy on evaluation samples {ours:.4f} is below the active model's {theirs:.4f}",
        )
    return GateDecision(
        True,
        f"NIST test accuracy {candidate.test_accuracy:.4f} (active {active.test_accuracy:.4f}, "
        f"allowed drop {max_nist_drop:.4f}) and evaluation-sample accuracy {_figure(ours)} "
        f"(active {_figure(theirs)}): not worse",
    )


def _figure(value: float | None) -> str:
    return "n/a (no evaluation samples)" if value is None else f"{value:.4f}"
