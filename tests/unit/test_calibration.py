"""Calibrated confidence: the learned prior divided out, the temperature fit, the ECE, the
ONNX graph that serves them, and the words a doubtful answer gets."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from domain.predictor import Candidate, doubt
from domain.registry import BUNDLED_MODEL_DIR
from trainer.calibrate import (
    INVERSE_TEMPERATURE,
    LOG_PRIOR,
    apply_calibration,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    learned_prior,
    matched_prior,
    with_calibration,
)
from trainer.evaluate import onnx_probabilities, served_as_scored


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def calibrated_draw(n: int = 20_000, classes: int = 10, seed: int = 0):
    """Logits and labels drawn from softmax(logits): confidences exactly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (n, classes))
    p = softmax(logits)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


def test_the_fit_recovers_the_temperature_of_an_overconfident_model() -> None:
    logits, labels = calibrated_draw()
    overconfident = softmax(logits * 2.0)  # a model twice too sure of itself
    temperature = fit_temperature(overconfident, labels)
    assert abs(temperature - 2.0) < 0.1
    assert abs(fit_temperature(softmax(logits), labels) - 1.0) < 0.05


def test_ece_is_near_zero_when_calibrated_and_falls_after_the_fit() -> None:
    logits, labels = calibrated_draw()
    assert expected_calibration_error(softmax(logits), labels) < 0.015
    overconfident = softmax(logits * 2.0)
    before = expected_calibration_error(overconfident, labels)
    after = expected_calibration_error(
        apply_calibration(overconfident, fit_temperature(overconfident, labels)), labels
    )
    assert before > 0.05 and after < 0.015


def test_ece_of_a_model_always_right_at_full_confidence_is_zero() -> None:
    p = np.eye(4)[[0, 1, 2, 3, 0]]
    assert expected_calibration_error(p, np.array([0, 1, 2, 3, 0])) == 0.0
    # Always wrong at full confidence: the largest error there is.
    assert expected_calibration_error(p, np.array([1, 2, 3, 0, 1])) == 1.0


def softmax_graph() -> bytes:
    """A model whose output is Softmax(input): enough to check what the calibration adds."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 6])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 6])
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["image"], ["probabilities"], axis=-1)], "g", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


def test_the_onnx_graph_serves_what_numpy_computes_and_holds_one_calibration() -> None:
    x = np.random.default_rng(1).normal(0, 4, (50, 6)).astype(np.float32)
    raw = run(softmax_graph(), x)
    calibrated = with_calibration(softmax_graph(), 1.7)
    served = run(calibrated, x)
    np.testing.assert_allclose(served, apply_calibration(raw, 1.7), atol=1e-5)
    assert (served.argmax(axis=1) == raw.argmax(axis=1)).all()  # a temperature keeps the answer
    assert served.max(axis=1).mean() < raw.max(axis=1).mean()  # T > 1: less sure
    prior = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    again = with_calibration(calibrated, 1.2, prior)  # replaces, does not stack
    np.testing.assert_allclose(run(again, x), apply_calibration(raw, 1.2, prior), atol=1e-5)
    names = [i.name for i in onnx.load_from_string(again).graph.initializer]
    assert names.count(INVERSE_TEMPERATURE) == 1 and names.count(LOG_PRIOR) == 1
    bare = with_calibration(again, 1.0)  # no calibration: the network's own output
    np.testing.assert_allclose(run(bare, x), raw, atol=1e-6)
    assert len(onnx.load_from_string(bare).graph.node) == 1


def test_learned_prior_follows_the_class_weights_of_training() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    np.testing.assert_allclose(learned_prior(labels, 2, 0.0), [0.9, 0.1])
    np.testing.assert_allclose(learned_prior(labels, 2, 1.0), [0.5, 0.5])
    half = learned_prior(labels, 2, 0.5)  # sqrt of the counts: 30 to 10
    np.testing.assert_allclose(half, [0.75, 0.25])


def test_dividing_out_the_prior_reads_a_rare_class_as_often_as_a_common_look_alike() -> None:
    """Two classes drawn from overlapping shapes (1-D normals one sd apart), 90% of training
    in class 0: the exact posterior a network would learn says 0 for most of class 1. With
    the prior divided out, each class is read right about as often, and the mean of the two
    accuracies (what a set with every class equally common measures) rises."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 20_000)
    x = rng.normal(labels.astype(float), 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - np.array([0.0, 1.0])) ** 2)
    prior = np.array([0.9, 0.1])
    posterior = likelihood * prior / (likelihood * prior).sum(axis=1, keepdims=True)

    def per_class(p: np.ndarray) -> np.ndarray:
        return np.array([(p.argmax(axis=1) == labels)[labels == c].mean() for c in (0, 1)])

    before, after = per_class(posterior), per_class(apply_calibration(posterior, 1.0, prior))
    assert before[1] < 0.1 < 0.6 < after[1]
    assert abs(after[0] - after[1]) < 0.05
    assert after.mean() > before.mean() + 0.15


def test_calibrate_divides_out_the_prior_and_fits_on_classes_weighing_the_same() -> None:
    logits, labels = calibrated_draw(classes=4)
    counts = np.bincount(labels, minlength=4)
    prior = counts / counts.sum()
    overconfident = softmax(logits * 2.0)
    sets = {"validation": (overconfident, labels), "test": (overconfident, labels)}
    plain, divided = calibrate(sets), calibrate(sets, prior)
    assert plain.learned_prior is None and plain.fitted_on == "validation split"
    assert divided.fitted_on == "validation split, every class weighing the same"
    assert divided.learned_prior == pytest.approx(list(prior), abs=1e-6)
    assert abs(plain.temperature - 2.0) < 0.1 and divided.ece_after["test"] < 0.03


def test_the_bundled_model_serves_its_prior_and_temperature() -> None:
    report = json.loads((BUNDLED_MODEL_DIR / "report.json").read_text())
    calibration = report["calibration"]
    holdout = f"holdout/{report['metrics']['holdout_slice']}"
    assert calibration["fitted_on"].startswith("validation")
    # Writers it never saw, every class about as common: the issue-15 target (ECE <= 2%).
    assert calibration["ece_after"][holdout] <= 0.02 < calibration["ece_before"][holdout]
    assert report["metrics"]["temperature"] == calibration["temperature"]
    graph = onnx.load(str(BUNDLED_MODEL_DIR / "model.onnx")).graph
    served = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert abs(1 / float(served[INVERSE_TEMPERATURE]) - calibration["temperature"]) < 1e-3
    np.testing.assert_allclose(np.exp(served[LOG_PRIOR]), calibration["learned_prior"], rtol=1e-4)
    assert len(calibration["learned_prior"]) == len(report["labels"])


def candidates(*probabilities: float) -> list[Candidate]:
    return [Candidate(c, p) for c, p in zip("O0QD", probabilities, strict=False)]


def test_a_doubtful_answer_is_said_in_words() -> None:
    assert doubt(candidates(0.95, 0.03), threshold=0.7) is None
    words = doubt(candidates(0.48, 0.41, 0.05), threshold=0.7)
    assert words == "Unsure: “O” is only 48% likely (then “0” 41%, “Q” 5%); check the answer."


def test_a_matched_prior_makes_a_model_read_each_class_as_often_as_the_reference() -> None:
    # Two look-alike classes: the reference reads half the images as each; the candidate's
    # boundary moved, it leans to class 0 (it reads 80% of them as 0).
    rng = np.random.default_rng(0)
    score = rng.normal(size=2000)
    reference = (score > 0).astype(int)
    logits = np.stack([-score + 0.85, score - 0.85], axis=1)
    candidate = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    uniform = np.array([0.5, 0.5])
    assert np.mean(candidate.argmax(1) == 0) > 0.75
    prior = matched_prior(candidate, reference, uniform, temperature=1.0)
    read = apply_calibration(candidate, 1.0, prior).argmax(1)
    assert abs(np.mean(read == 0) - np.mean(reference == 0)) < 0.005
    assert np.mean(read == reference) > 0.99  # the same boundary, not just the same counts
    # Already reading as the reference does: the prior stays.
    same = matched_prior(candidate, candidate.argmax(1), uniform, temperature=1.0)
    np.testing.assert_allclose(same, uniform, atol=1e-6)


def test_scores_not_from_the_served_graph_are_refused() -> None:
    """A training scores its calibrated model from the raw network's probabilities (one run
    per set); `served_as_scored` holds those scores to what the calibrated graph gives."""
    model = (BUNDLED_MODEL_DIR / "model.onnx").read_bytes()
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    scored = onnx_probabilities(model, images)
    served_as_scored(model, images, scored)  # the graph's own: accepted
    with pytest.raises(RuntimeError, match="does not give"):
        served_as_scored(model, images, np.roll(scored, 1, axis=1))
