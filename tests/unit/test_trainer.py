"""trainer: tiny models on a few thousand real images, ONNX export and evaluation, the CLI,
and the committed bundled model on real holdout images."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # the API image has no TensorFlow; these need it

import onnxruntime as ort
import tensorflow as tf

from core.config import EMNIST_BALANCED_LABELS, REPO_ROOT, Settings
from core.labels import LabelSet
from core.model_report import ModelReport
from core.preprocessing import MODEL_INPUT_NAME, nist_to_model_input
from trainer.augment import Distortion, random_distortion, vary_ink
from trainer.cli import apply_run_name
from trainer.cli import main as cli_main
from trainer.config import ExtraSamples, TrainingConfig
from trainer.data import NistData, class_lookup, load_nist, read_split
from trainer.evaluate import (
    build_report,
    evaluate_sets,
    nist_sets,
    onnx_probabilities,
    write_report,
)
from trainer.export import export_onnx, onnx_keras_difference
from trainer.model import ExtremeLearningMachine, build_model, cnn, lenet5, resnet
from trainer.train import (
    TrainedModel,
    TrainingProgress,
    class_weights,
    train_model,
    training_loss,
)

DATA_DIR = Settings().nist_data_dir
BUNDLED = REPO_ROOT / "trainer" / "bundled"

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "emnist").is_dir(), reason=f"NIST data not found in {DATA_DIR}"
)


def small(data: NistData, test: int = 1000, holdout: int = 500) -> NistData:
    """The same data with short test and holdout sets, for quick evaluations."""
    return replace(
        data,
        x_test=data.x_test[:test],
        y_test=data.y_test[:test],
        holdout={k: (x[:holdout], y[:holdout]) for k, (x, y) in data.holdout.items()},
    )


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    predicted = model.predict(nist_to_model_input(x), batch_size=512, verbose=0).argmax(axis=1)
    return float((predicted == y).mean())


@pytest.fixture(scope="module")
def digits() -> NistData:
    return load_nist(DATA_DIR, LabelSet("0123456789"))


@pytest.fixture(scope="module")
def tiny(digits: NistData) -> TrainedModel:
    """The default CNN, one epoch on 3,000 digits (small batches: enough steps for the batch
    norm statistics to settle)."""
    return train_model(
        digits, TrainingConfig("cnn", epochs=1, max_train=3000, batch_size=32), verbose=0
    )


def test_models_take_images_and_give_probabilities() -> None:
    images = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    for model in (cnn(47), lenet5(15), resnet(47), build_model("cnn", 10)):
        assert model.input_shape == (None, 28, 28, 1)
        assert model.inputs[0].name == MODEL_INPUT_NAME
        probabilities = np.asarray(model(images, training=False))
        assert probabilities.shape == (3, model.output_shape[-1])
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert cnn(47).count_params() <= 500_000
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg16", 10)


def test_tiny_cnn_learns_digits(tiny: TrainedModel, digits: NistData) -> None:
    assert tiny.train_size == 3000
    assert accuracy(tiny.model, digits.x_test[:2000], digits.y_test[:2000]) > 0.8  # chance: 0.1
    assert set(tiny.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_the_same_seed_trains_the_same_weights(tiny: TrainedModel, digits: NistData) -> None:
    """`make starter-model` is reproducible: augmentation included, one seed, one model
    (stateful random ops in the parallel input pipeline once made two runs differ by up to 1.7
    in a batch-norm statistic)."""
    again = train_model(digits, tiny.config, verbose=0)
    for first, second in zip(tiny.model.weights, again.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second), err_msg=first.path)


def test_label_smoothing_softens_the_targets() -> None:
    assert training_loss(TrainingConfig()) == "sparse_categorical_crossentropy"
    confident = tf.constant([[0.98, 0.01, 0.01]])
    right = tf.constant([0])
    plain = float(tf.keras.losses.sparse_categorical_crossentropy(right, confident)[0])
    smoothed = float(training_loss(TrainingConfig(label_smoothing=0.2))(right, confident)[0])
    # Smoothed targets (0.867, 0.067, 0.067) punish the confident right answer more.
    assert smoothed > plain + 0.1


def test_a_run_with_weight_averaging_serves_averaged_weights_that_read_digits(
    digits: NistData,
) -> None:
    config = TrainingConfig(
        "cnn", epochs=2, max_train=3000, batch_size=32, label_smoothing=0.1, ema=True
    )
    trained = train_model(digits, config, verbose=0)
    # The average spans the run's last tenth whatever its length: a fixed span of ~1,000
    # steps (the first try) left a run this short near its random start, 12% right.
    assert accuracy(trained.model, digits.x_test[:2000], digits.y_test[:2000]) > 0.8


def test_lenet5_learns_digits(digits: NistData) -> None:
    trained = train_model(
        digits, TrainingConfig("lenet5", epochs=1, max_train=3000, augment=False), verbose=0
    )
    assert accuracy(trained.model, digits.x_test[:2000], digits.y_test[:2000]) > 0.6


def test_extreme_learning_machine_learns_digits(digits: NistData) -> None:
    elm = ExtremeLearningMachine(10, hidden=1000)
    elm.fit(digits.x_train[:5000].astype(np.float32) / 255, digits.y_train[:5000])
    predicted = elm.predict(digits.x_test[:2000].astype(np.float32) / 255)
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, rtol=1e-5)
    assert (predicted.argmax(axis=1) == digits.y_test[:2000]).mean() > 0.8


def test_onnx_export_agrees_with_keras(tiny: TrainedModel, digits: NistData, tmp_path: Path):
    path = export_onnx(tiny.model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    output, embedding = session.get_outputs()
    assert image_input.name == "image"
    assert image_input.shape[1:] == [28, 28, 1] and not isinstance(image_input.shape[0], int)
    assert (output.name, output.shape[1:]) == ("probabilities", [10])
    # What the last layer reads, for the uploads' evidence (domain/evidence.py).
    assert embedding.name == "embedding"
    vectors = session.run(["embedding"], {"image": nist_to_model_input(digits.x_test[:5])})[0]
    assert vectors.shape[0] == 5 and vectors.shape[1] > 10
    batch = nist_to_model_input(digits.x_test[:300])
    assert onnx_keras_difference(tiny.model, path, batch) < 1e-4
    probabilities = onnx_probabilities(path, digits.x_test[:5])
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_report_scores_every_set_and_is_written_out(
    tiny: TrainedModel, digits: NistData, tmp_path: Path
) -> None:
    data = small(digits)
    onnx = export_onnx(tiny.model, tmp_path / "model.onnx").read_bytes()
    training = {"parameters": tiny.model.count_params(), "epochs": 1}
    evaluation = evaluate_sets(onnx, nist_sets(data), data.labels)
    report = build_report(onnx, data, evaluation, "cnn", training, tiny.history)
    write_report(report, tmp_path)

    assert report.labels == "0123456789" and report.architecture == "cnn"
    assert set(report.evaluation) == {"test", *(f"holdout/{k}" for k in digits.holdout)}
    test = report.evaluation["test"]
    assert test.images == 1000 and np.sum(test.confusion) == 1000
    assert set(test.per_class) == set("0123456789")
    confusion = np.array(test.confusion)
    assert test.accuracy == pytest.approx(np.trace(confusion) / 1000)
    assert test.accuracy > 0.8
    assert test.most_confused[0].count == (confusion - np.diag(np.diag(confusion))).max()
    # The headline slice is one made only of digits, not the digits of the balanced slice.
    headline = report.metrics.holdout_slice
    assert headline in ("digits-train-228096-239999", "mnist-train-42632-59999")
    assert report.metrics.holdout_accuracy == report.evaluation[f"holdout/{headline}"].accuracy
    assert report.metrics.evaluation_samples == 0
    assert report.model.onnx_bytes == len(onnx)

    for png in ("confusion.png", "confusion-holdout.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert ModelReport.model_validate_json((tmp_path / "report.json").read_text()) == report
    markdown = (tmp_path / "report.md").read_text()
    assert "| test | 1,000 |" in markdown and "confusion.png" in markdown
    assert (tmp_path / "labels.txt").read_text().strip() == "0123456789"


def test_progress_is_reported_and_can_stop_training(digits: NistData) -> None:
    seen: list[TrainingProgress] = []
    trained = train_model(
        digits,
        TrainingConfig("lenet5", epochs=2, max_train=1024, batch_size=64),
        progress=seen.append,
        progress_every=4,
        verbose=0,
    )
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [p.epoch for p in seen if p.step == p.steps] == [1, 2]
    assert not trained.stopped_early

    stopped = train_model(
        digits,
        TrainingConfig("lenet5", epochs=3, max_train=1024, batch_size=64),
        progress=lambda p: p.fraction < 0.1,
        progress_every=4,
        verbose=0,
    )
    assert stopped.stopped_early
    assert len(stopped.history["loss"]) == 1  # stopped within the first epoch


def test_extra_samples_are_oversampled_and_learned(digits: NistData) -> None:
    # A user's "7" written as a plain square outline: unlike any NIST 7.
    square = np.zeros((20, 28, 28), dtype=np.uint8)
    square[:, 6:22, 6:9] = square[:, 6:22, 19:22] = 255
    square[:, 6:9, 6:22] = square[:, 19:22, 6:22] = 255
    seven = np.full(20, 7)
    trained = train_model(
        digits,
        TrainingConfig("cnn", epochs=1, max_train=2000, batch_size=32),
        extra=ExtraSamples(square, seven, copies=10),
        verbose=0,
    )
    assert trained.train_size == 2000 + 200
    assert accuracy(trained.model, square[:1], seven[:1]) == 1.0


def test_warm_start_continues_from_saved_weights(
    tiny: TrainedModel, digits: NistData, tmp_path: Path
) -> None:
    weights = tmp_path / "model.weights.h5"
    tiny.model.save_weights(weights)
    x, y = digits.x_test[:1000], digits.y_test[:1000]
    small_run = TrainingConfig("cnn", epochs=1, max_train=128, augment=False)
    cold = train_model(digits, small_run, verbose=0)
    warm = train_model(
        digits,
        replace(small_run, learning_rate=1e-4),
        initial_weights=weights,
        verbose=0,
    )
    assert accuracy(warm.model, x, y) > accuracy(tiny.model, x, y) - 0.05
    assert accuracy(warm.model, x, y) > accuracy(cold.model, x, y) + 0.2


def test_class_weights() -> None:
    y = np.array([0] * 90 + [1] * 10)
    assert class_weights(y, 2, power=0) == {0: 1.0, 1: 1.0}
    balanced = class_weights(y, 2, power=1)
    assert balanced[0] * 90 == pytest.approx(balanced[1] * 10)  # equal total weight
    assert (balanced[0] * 90 + balanced[1] * 10) / 100 == pytest.approx(1.0)  # mean 1


def test_augmentation_distorts_a_little(digits: NistData) -> None:
    images = tf.constant(nist_to_model_input(digits.x_train[:256]))
    unchanged = Distortion(0, 0, (1.0, 1.0), 0, 0, 4, 0)
    seed = tf.constant([3, 0], tf.int64)
    np.testing.assert_allclose(random_distortion(images, seed, unchanged).numpy(), images.numpy())
    assert Distortion().scaled(0.0) == unchanged
    doubled = Distortion().scaled(2.0)
    assert doubled.max_rotation_degrees == 20 and doubled.scale_range == pytest.approx((0.8, 1.2))
    distorted = random_distortion(images, seed).numpy()
    np.testing.assert_array_equal(random_distortion(images, seed).numpy(), distorted)
    other = random_distortion(images, tf.constant([3, 1], tf.int64)).numpy()
    assert np.abs(other - distorted).mean() > 0.01  # another seed, other distortions
    assert distorted.shape == images.shape and distorted.dtype == np.float32
    assert distorted.min() >= 0 and distorted.max() <= 1
    change = np.abs(distorted - images.numpy()).mean(axis=(1, 2, 3))
    assert (change > 0.01).all()  # every image moved
    ink = distorted.sum(axis=(1, 2, 3)) / images.numpy().sum(axis=(1, 2, 3))
    assert 0.7 < np.median(ink) < 1.3  # but stays the same character, roughly


def test_ink_variation_varies_some_images_and_keeps_them_glyphs(digits: NistData) -> None:
    images = tf.constant(nist_to_model_input(digits.x_train[:512]))
    seed = tf.constant([5, 0], tf.int64)
    np.testing.assert_array_equal(vary_ink(images, seed, 0.0).numpy(), images.numpy())
    varied = vary_ink(images, seed, 0.5).numpy()
    np.testing.assert_array_equal(vary_ink(images, seed, 0.5).numpy(), varied)  # seeded
    changed = np.abs(varied - images.numpy()).max(axis=(1, 2, 3)) > 0.05
    assert 0.35 < changed.mean() < 0.55  # about half of them, each one way
    assert varied.shape == images.shape and varied.min() >= 0
    np.testing.assert_allclose(varied.max(axis=(1, 2, 3)), 1.0, atol=1e-5)  # peak 1, as served
    every = vary_ink(images, seed, 1.0).numpy()
    ink = (every > 0.5).sum(axis=(1, 2, 3)) / (images.numpy() > 0.5).sum(axis=(1, 2, 3))
    assert ink.min() < 0.8 and ink.max() > 1.3  # thinner and thicker pens among them


def test_a_compare_run_name_sets_what_it_says() -> None:
    run_args = argparse.Namespace(
        arch="cnn", augment=True, augment_strength=1.0, label_smoothing=0.0, ema=False
    )
    apply_run_name("resnet-aug0.5-ls0.1-ema", run_args)
    assert vars(run_args) == {
        "arch": "resnet",
        "augment": True,
        "augment_strength": 0.5,
        "label_smoothing": 0.1,
        "ema": True,
    }
    apply_run_name("cnn-noaug", run_args)
    assert run_args.arch == "cnn" and run_args.augment is False
    for bad in ("cnn-ls", "cnn-augx", "cnn-swa"):
        with pytest.raises(SystemExit, match="unknown modifier"):
            apply_run_name(bad, run_args)


def test_cli_train_writes_a_complete_model_directory(tmp_path: Path) -> None:
    out = tmp_path / "model"
    argv = ["train", "--labels", "0123456789ABCDE", "--epochs", "1", "--max-train", "2000"]
    assert cli_main([*argv, "--arch", "lenet5", "--no-augment", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names >= {
        "model.onnx",
        "model.weights.h5",
        "report.json",
        "report.md",
        "confusion.png",
        "curves.png",
        "labels.txt",
    }
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == "0123456789ABCDE" and report["architecture"] == "lenet5"
    assert report["training"]["augment"] is False and report["training"]["train_size"] == 2000
    assert report["metrics"]["test_accuracy"] > 0.5
    # The served graph divides out the class frequencies this run's loss saw (class_balance 0.5).
    prior = np.array(report["calibration"]["learned_prior"])
    assert prior.shape == (15,) and prior.sum() == pytest.approx(1.0, abs=1e-5)
    assert prior[:10].mean() > prior[10:].mean()  # NIST holds more digits than A-E
    # The saved weights load into the same architecture: what a warm start needs.
    build_model("lenet5", 15).load_weights(out / "model.weights.h5")
    assert cli_main(["evaluate", str(out / "model.onnx")]) == 0  # labels from report.json
    assert json.loads((out / "report.json").read_text())["training"] == report["training"]


def test_bundled_model_is_small_complete_and_accurate_on_the_holdout() -> None:
    files = {p.name: p.stat().st_size for p in BUNDLED.iterdir()}
    assert set(files) >= {"model.onnx", "model.weights.h5", "report.json", "report.md"}
    assert set(files) >= {"confusion.png", "curves.png", "labels.txt"}
    assert sum(files.values()) < 8 * 1024 * 1024
    report = json.loads((BUNDLED / "report.json").read_text())
    assert report["labels"] == EMNIST_BALANCED_LABELS
    assert (BUNDLED / "labels.txt").read_text().strip() == EMNIST_BALANCED_LABELS

    # 2,000 images of the writer-disjoint 47-class holdout, read straight from the file.
    split = read_split(
        DATA_DIR / "emnist-holdout" / "emnist-balanced-train-103680-112799-images-idx3-ubyte.gz"
    )
    chosen = np.random.default_rng(0).choice(len(split.labels), 2000, replace=False)
    session = ort.InferenceSession(str(BUNDLED / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": nist_to_model_input(split.images[chosen])})[0]
    assert probabilities.shape == (2000, 47)
    truth = class_lookup(split.characters, LabelSet(report["labels"]))[split.labels[chosen]]
    assert (truth >= 0).all()  # the balanced split has exactly these 47 classes
    correct = (probabilities.argmax(axis=1) == truth).mean()
    assert correct >= 0.85, f"{correct:.1%} on 2,000 holdout images"
