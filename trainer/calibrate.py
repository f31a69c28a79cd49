"""Calibrated confidence: every class equal a priori, then one temperature (Guo et al., 2017).

A network learns its training set's class frequencies along with the shapes: trained on NIST
(half of it digits), it reads a round mark as `0` far more often than as `O`. The service
assumes no character is likelier than another (as the EMNIST-balanced benchmark does), so the
frequencies the network learned are divided out (logit adjustment, Menon et al., 2021), and
its probabilities p become softmax((log p - log prior) / T). T minimises the negative
log-likelihood on the validation split (never test or holdout) with every class weighing the
same, the split as it would be under that assumption. Both are written into the ONNX graph,
so every process serving the file serves calibrated probabilities with no code of its own,
and reported with the expected calibration error (ECE, 15 bins) before and after.
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from core.model_report import Calibration

ECE_BINS = 15
FLOOR = 1e-30  # log(0) guard: float32 softmax outputs can be exactly 0
INVERSE_TEMPERATURE = "calibration_inverse_temperature"
LOG_PRIOR = "calibration_log_prior"
PREFIX = "calibration_"  # every node and initializer the calibration adds to a graph
SEARCH = (np.log(0.05), np.log(20.0))  # the temperature is searched within this range


def learned_prior(labels: np.ndarray, num_classes: int, class_balance: float) -> np.ndarray:
    """The class frequencies a network learns from training labels whose loss weighs each class
    (1 / count) ** class_balance (trainer.train.class_weights): count ** (1 - class_balance),
    normalised. 1 (every class weighing the same) gives the uniform prior."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weighted = np.maximum(counts, 1.0) ** (1.0 - class_balance)
    return weighted / weighted.sum()


def apply_calibration(
    probabilities: np.ndarray, temperature: float, prior: np.ndarray | None = None
) -> np.ndarray:
    """What the calibrated graph computes, in numpy: the prior divided out, then the
    temperature."""
    logits = np.log(np.maximum(probabilities, FLOOR))
    if prior is not None:
        logits = logits - np.log(prior)
    logits /= temperature
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
    prior: np.ndarray | None = None,
    steps: int = 60,
) -> float:
    """The temperature that minimises the (weighted) NLL once `prior` is divided out:
    golden-section search over log T (the NLL of temperature scaling is unimodal in it)."""
    ratio = (np.sqrt(5) - 1) / 2
    low, high = SEARCH

    def loss(log_t: float) -> float:
        scaled = apply_calibration(probabilities, np.exp(log_t), prior)
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


def matched_prior(
    probabilities: np.ndarray,
    reference: np.ndarray,
    prior: np.ndarray,
    temperature: float,
    steps: int = 300,
) -> np.ndarray:
    """The prior whose division makes the model read each class as often as the reference
    model does on the same images (`reference`: its predicted classes). A warm retrain moves
    the boundaries between look-alike classes (1/I/l, O/0, 9/g/q) by a few points either way,
    whatever it learnt; dividing out the frequencies it now leans towards puts them back where
    its starting model had them, and leaves what it learnt of new shapes. Each step moves a
    class's log prior by a fifth of the log ratio of its counts (add-one smoothed); the best
    match seen is returned."""
    classes = probabilities.shape[1]
    want = np.bincount(reference, minlength=classes) + 1.0
    log_prior = np.log(prior).copy()
    best, best_distance = prior, np.inf
    # The class read is the largest calibrated logit; the temperature scales them all alike
    # and the softmax keeps their order, so neither is computed at each step.
    logits = np.log(np.maximum(probabilities, FLOOR))
    for _ in range(steps):
        read = (logits - log_prior).argmax(axis=1)
        have = np.bincount(read, minlength=classes) + 1.0
        distance = float(np.abs(have - want).sum())
        if distance < best_distance:
            best, best_distance = np.exp(log_prior - np.log(np.exp(log_prior).sum())), distance
        if distance == 0:
            break
        log_prior += 0.2 * temperature * (np.log(have) - np.log(want))
    return best


def calibrate(
    probabilities: dict[str, tuple[np.ndarray, np.ndarray]],
    prior: np.ndarray | None = None,
    fit_on: str = "validation",
    reference: np.ndarray | None = None,
) -> Calibration:
    """Divide out `prior` (None: keep the learned frequencies) and fit the temperature on
    `probabilities[fit_on]`, every class weighing the same when the prior is divided out;
    ECE before and after on every set given. `reference`: what a reference model read on
    `fit_on` (its predicted classes); the prior is then matched to it (`matched_prior`)."""
    p_fit, y_fit = probabilities[fit_on]
    weights = class_balanced_weights(y_fit) if prior is not None else None
    temperature = round(fit_temperature(p_fit, y_fit, weights, prior), 4)
    if reference is not None and prior is not None:
        prior = matched_prior(p_fit, reference, prior, temperature)
        temperature = round(fit_temperature(p_fit, y_fit, weights, prior), 4)
    return Calibration(
        temperature=temperature,
        fitted_on=f"{fit_on} split"
        + (", every class weighing the same" if weights is not None else "")
        + (", the prior matched to the starting model's readings" if reference is not None else ""),
        bins=ECE_BINS,
        learned_prior=None if prior is None else [round(float(v), 6) for v in prior],
        ece_before={k: expected_calibration_error(p, y) for k, (p, y) in probabilities.items()},
        ece_after={
            k: expected_calibration_error(apply_calibration(p, temperature, prior), y)
            for k, (p, y) in probabilities.items()
        },
    )


def with_calibration(model: bytes, temperature: float, prior: np.ndarray | None = None) -> bytes:
    """The ONNX model with its output's log divided by `prior` and by `temperature`, and
    renormalised: Max(p, floor) -> Log -> Sub(log prior) -> Mul(1/T) -> Softmax. Any calibration
    the graph held is replaced, never stacked: `with_calibration(model, 1.0)` is the network's
    own output."""
    proto = onnx.load_from_string(model)
    graph = proto.graph
    output = graph.output[0].name
    raw = f"{output}_uncalibrated"
    _remove_calibration(graph, raw, output)
    if temperature == 1.0 and prior is None:
        return proto.SerializeToString()
    log_prior = np.zeros(()) if prior is None else np.log(np.asarray(prior))  # () broadcasts
    for node in graph.node:
        node.output[:] = [raw if name == output else name for name in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(FLOOR, np.float32), f"{PREFIX}floor"),
            numpy_helper.from_array(log_prior.astype(np.float32), LOG_PRIOR),
            numpy_helper.from_array(np.array(1.0 / temperature, np.float32), INVERSE_TEMPERATURE),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Max", [raw, f"{PREFIX}floor"], [f"{PREFIX}clipped"]),
            helper.make_node("Log", [f"{PREFIX}clipped"], [f"{PREFIX}log"]),
            helper.make_node("Sub", [f"{PREFIX}log", LOG_PRIOR], [f"{PREFIX}adjusted"]),
            helper.make_node("Mul", [f"{PREFIX}adjusted", INVERSE_TEMPERATURE], [f"{PREFIX}z"]),
            helper.make_node("Softmax", [f"{PREFIX}z"], [output], axis=-1),
        ]
    )
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _remove_calibration(graph: onnx.GraphProto, raw: str, output: str) -> None:
    """Take out the calibration's nodes and initializers; the network's own output becomes the
    graph's output again."""
    ours = [
        node
        for node in graph.node
        if raw in node.input or any(n.startswith(PREFIX) for n in [*node.input, *node.output])
    ]
    if not ours:
        return
    for node in ours:
        graph.node.remove(node)
    for initializer in [i for i in graph.initializer if i.name.startswith(PREFIX)]:
        graph.initializer.remove(initializer)
    for node in graph.node:
        node.output[:] = [output if name == raw else name for name in node.output]
