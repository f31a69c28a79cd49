"""What a trained model is known to be: the report stored with every model version.

One shape for the bundled model (trainer/bundled/report.json), the CLI's model directories and
the versions a retrain registers. Pure pydantic, so that the API reads it without the trainer.

Names: the NIST `holdout` slices are writers the model never saw (emnist-holdout/); the
`evaluation` samples are user uploads kept out of training to judge candidates.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The evaluation set made of users' evaluation samples, next to "test" and "holdout/<slice>".
EVALUATION_SAMPLES = "evaluation_samples"


class Confusion(BaseModel):
    true: str
    predicted: str
    count: int
    share_of_true: float


class ClassScore(BaseModel):
    accuracy: float
    images: int


class SetScore(BaseModel):
    """A model's predictions on one labelled set, summed up."""

    images: int
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, ClassScore]
    most_confused: list[Confusion]
    confusion: list[list[int]] = Field(description="counts[true][predicted], label-set order")
    expected_calibration_error: float | None = Field(
        default=None, description="ECE (15 bins) of the model's confidences on this set"
    )


class Calibration(BaseModel):
    """What the served graph does to the network's probabilities (trainer.calibrate): divide
    out the class frequencies it learned, then divide by a temperature (in log space) fitted on
    the validation split; and what that did to the expected calibration error of each set."""

    temperature: float
    fitted_on: str
    bins: int
    # Per class, in label order; None: the learned frequencies are served as they are.
    learned_prior: list[float] | None = None
    ece_before: dict[str, float]
    ece_after: dict[str, float]


class Metrics(BaseModel):
    """The headline figures: what the registry lists and the gate compares."""

    model_config = ConfigDict(extra="ignore")

    test_accuracy: float
    holdout_slice: str | None = None
    holdout_accuracy: float | None = None
    evaluation_samples: int = 0
    evaluation_samples_accuracy: float | None = None
    temperature: float | None = None  # the calibration in the served graph (None: none)
    holdout_ece: float | None = None  # expected calibration error on the holdout slice


class ModelFile(BaseModel):
    onnx_bytes: int
    onnx_sha256: str
    parameters: int | None = None


class ModelReport(BaseModel):
    """Everything known about one trained model; stored as JSON with its version."""

    model_config = ConfigDict(extra="ignore")

    labels: str
    architecture: str
    created_at: str
    metrics: Metrics
    model: ModelFile
    training: dict[str, Any] = Field(
        default_factory=dict, description="How it was trained: configuration, time, command"
    )
    history: dict[str, list[float]] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="Sizes of the data sets")
    evaluation: dict[str, SetScore] = Field(
        default_factory=dict, description='Per set: "test", "holdout/<slice>", evaluation samples'
    )
    calibration: Calibration | None = None


def headline_metrics(
    evaluation: dict[str, SetScore],
    holdout_slice: str | None,
    calibration: Calibration | None = None,
) -> Metrics:
    """The headline figures of a set of scores (test, the main holdout slice, evaluation)."""
    holdout = evaluation.get(f"holdout/{holdout_slice}") if holdout_slice else None
    samples = evaluation.get(EVALUATION_SAMPLES)
    return Metrics(
        test_accuracy=evaluation["test"].accuracy,
        holdout_slice=holdout_slice if holdout else None,
        holdout_accuracy=holdout.accuracy if holdout else None,
        evaluation_samples=samples.images if samples else 0,
        evaluation_samples_accuracy=samples.accuracy if samples else None,
        temperature=calibration.temperature if calibration else None,
        holdout_ece=holdout.expected_calibration_error if holdout else None,
    )
