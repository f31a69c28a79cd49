"""trainer.export.ensemble_onnx: one ONNX graph that serves the mean of its members."""

import numpy as np
import onnxruntime as ort

from domain.registry import BUNDLED_MODEL_DIR
from trainer.calibrate import with_calibration
from trainer.export import ensemble_onnx


def run(model: bytes, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert next(o.name for o in session.get_outputs()) == "probabilities"
    return session.run(["probabilities"], {"image": images})[0]


def test_the_ensemble_serves_the_mean_of_its_members_and_takes_a_temperature() -> None:
    bundled = (BUNDLED_MODEL_DIR / "model.onnx").read_bytes()
    sharp, soft = with_calibration(bundled, 0.5), with_calibration(bundled, 3.0)
    images = np.random.default_rng(0).random((7, 28, 28, 1), dtype=np.float32)
    ensemble = ensemble_onnx([sharp, soft])
    expected = (run(sharp, images) + run(soft, images)) / 2
    assert not np.allclose(run(sharp, images), run(soft, images), atol=1e-3)
    np.testing.assert_allclose(run(ensemble, images), expected, atol=1e-6)
    calibrated = run(with_calibration(ensemble, 2.0), images)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(calibrated, expected, atol=1e-3)
