"""Calibrated confidence: the temperature fit, the ECE, the ONNX graph that serves it, and the
words a doubtful answer gets."""

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from domain.predictor import Candidate, Prediction, doubt
from domain.registry import BUNDLED_MODEL_DIR
from trainer.calibrate import (
    INVERSE_TEMPERATURE,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    with_temperature,
)


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
        apply_temperature(overconfident, fit_temperature(overconfident, labels)), labels
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


def test_the_onnx_graph_serves_what_numpy_computes_and_holds_one_temperature() -> None:
    x = np.random.default_rng(1).normal(0, 4, (50, 6)).astype(np.float32)
    raw = run(softmax_graph(), x)
    calibrated = with_temperature(softmax_graph(), 1.7)
    served = run(calibrated, x)
    np.testing.assert_allclose(served, apply_temperature(raw, 1.7), atol=1e-5)
    assert (served.argmax(axis=1) == raw.argmax(axis=1)).all()  # the answer never changes
    assert served.max(axis=1).mean() < raw.max(axis=1).mean()  # T > 1: less sure
    again = with_temperature(calibrated, 1.0)  # replaces, does not stack
    np.testing.assert_allclose(run(again, x), raw, atol=1e-5)
    names = [i.name for i in onnx.load_from_string(again).graph.initializer]
    assert names.count(INVERSE_TEMPERATURE) == 1


def test_the_bundled_model_serves_its_fitted_temperature() -> None:
    report = json.loads((BUNDLED_MODEL_DIR / "report.json").read_text())
    calibration = report["calibration"]
    holdout = f"holdout/{report['metrics']['holdout_slice']}"
    assert calibration["fitted_on"].startswith("validation")
    # Writers it never saw: the calibration brings the error down (the 2% target is missed
    # by 0.04 point, docs/BENCHMARKS.md).
    assert calibration["ece_after"][holdout] < calibration["ece_before"][holdout]
    assert report["metrics"]["temperature"] == calibration["temperature"]
    graph = onnx.load(str(BUNDLED_MODEL_DIR / "model.onnx")).graph
    (inverse,) = [i for i in graph.initializer if i.name == INVERSE_TEMPERATURE]
    value = onnx.numpy_helper.to_array(inverse)
    assert abs(1 / float(value) - calibration["temperature"]) < 1e-3


def prediction(*probabilities: float) -> Prediction:
    top = [Candidate(c, p) for c, p in zip("O0QD", probabilities, strict=False)]
    return Prediction(top[0].label, top[0].probability, top, np.zeros((28, 28), np.float32))


def test_a_doubtful_answer_is_said_in_words() -> None:
    assert doubt(prediction(0.95, 0.03), threshold=0.7) is None
    words = doubt(prediction(0.48, 0.41, 0.05), threshold=0.7)
    assert words == "Unsure: “O” is only 48% likely (then “0” 41%, “Q” 5%); check the answer."
