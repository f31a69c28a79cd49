"""Calibrated confidence: one temperature fitted on the validation split (Guo et al., 2017).

The network's probabilities p become softmax(log p / T): the same ranking (the answer never
changes), with confidences that match how often the model is right. T minimises the negative
log-likelihood on the validation split (never test or holdout). It is written into the ONNX
graph, so every process serving the file serves calibrated
probabilities with no code of its own, and reported with the expected calibration error (ECE,
15 bins) before and after.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from core.model_report import Calibration

ECE_BINS = 15
FLOOR = 1e-30  # log(0) guard: float32 softmax outputs can be exactly 0
INVERSE_TEMPERATURE = "calibration_inverse_temperature"
SEARCH = (np.log(0.05), np.log(20.0))  # the temperature is searched within this range


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """What the calibrated graph computes, in numpy."""
    logits = np.log(np.maximum(probabilities, FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def negative_log_likelihood(
    probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    right = probabilities[np.arange(len(labels)), labels]
    return float(-np.average(np.log(np.maximum(right, FLOOR)), weights=weights))


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per image 1 / (its class's count): every class weighs the same in a mean."""
    return 1.0 / np.bincount(labels)[labels]


def fit_temperature(
    probabilities: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    steps: int = 60,
) -> float:
    """The temperature that minimises the (weighted) NLL: golden-section search over log T
    (the NLL of temperature scaling is unimodal in it)."""
    ratio = (np.sqrt(5) - 1) / 2
    low, high = SEARCH

    def loss(log_t: float) -> float:
        scaled = apply_temperature(probabilities, np.exp(log_t))
        return negative_log_likelihood(scaled, labels, weights)

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(steps):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their share of
    the images: 0 when "90% sure" is right 90% of the time, at every confidence."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(correct[members].mean() - confidence[members].mean())
            error += members.mean() * gap
    return float(error)


def calibrate(
    probabilities: dict[str, tuple[np.ndarray, np.ndarray]], fit_on: str = "validation"
) -> Calibration:
    """Fit on `probabilities[fit_on]`; ECE before and after on every set given."""
    temperature = fit_temperature(*probabilities[fit_on])
    return Calibration(
        temperature=round(temperature, 4),
        fitted_on=f"{fit_on} split",
        bins=ECE_BINS,
        ece_before={k: expected_calibration_error(p, y) for k, (p, y) in probabilities.items()},
        ece_after={
            k: expected_calibration_error(apply_temperature(p, temperature), y)
            for k, (p, y) in probabilities.items()
        },
    )


def with_temperature(model: bytes, temperature: float) -> bytes:
    """The ONNX model with its output divided in log space by `temperature` and renormalised:
    Max(p, floor) -> Log -> Mul(1/T) -> Softmax. Applied again, it replaces the temperature
    (the graph holds one)."""
    proto = onnx.load_from_string(model)
    graph = proto.graph
    inverse = numpy_helper.from_array(np.array(1.0 / temperature, np.float32), INVERSE_TEMPERATURE)
    existing = [i for i in graph.initializer if i.name == INVERSE_TEMPERATURE]
    if existing:
        existing[0].CopyFrom(inverse)
        return proto.SerializeToString()
    output = graph.output[0].name
    raw = f"{output}_uncalibrated"
    for node in graph.node:
        node.output[:] = [raw if name == output else name for name in node.output]
    floor = numpy_helper.from_array(np.array(FLOOR, np.float32), "calibration_floor")
    graph.initializer.extend([floor, inverse])
    graph.node.extend(
        [
            helper.make_node("Max", [raw, floor.name], ["calibration_clipped"]),
            helper.make_node("Log", ["calibration_clipped"], ["calibration_log"]),
            helper.make_node("Mul", ["calibration_log", INVERSE_TEMPERATURE], ["calibration_z"]),
            helper.make_node("Softmax", ["calibration_z"], [output], axis=-1),
        ]
    )
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
