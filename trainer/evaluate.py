"""Evaluating an ONNX model with ONNX Runtime alone: the numbers the service will really get.

Writes report.json, report.md, confusion.png (test split), confusion-holdout.png (the main
holdout slice) and curves.png (when a training history is given) next to the model.
"""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort

from core.labels import LabelSet
from core.model_report import (
    Calibration,
    ClassScore,
    Confusion,
    ModelFile,
    ModelReport,
    SetScore,
    headline_metrics,
)
from core.preprocessing import MODEL_INPUT_NAME, nist_to_model_input
from trainer.calibrate import (
    apply_calibration,
    calibrate,
    expected_calibration_error,
    learned_prior,
    with_calibration,
)
from trainer.config import TrainingConfig
from trainer.data import NistData

TOP_CONFUSIONS = 10


def onnx_probabilities(
    model: Path | bytes, images: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """uint8 (N, 28, 28) NIST images -> (N, C) probabilities from the ONNX model (file or bytes)."""
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    batches = [
        session.run(None, {MODEL_INPUT_NAME: nist_to_model_input(images[i : i + batch_size])})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def score(y_true: np.ndarray, y_pred: np.ndarray, labels: LabelSet) -> SetScore:
    """Accuracy, per-class accuracy and the most confused pairs of one set of predictions."""
    counts = confusion_matrix(y_true, y_pred, len(labels))
    per_class = {
        c: ClassScore(accuracy=float(counts[i, i] / counts[i].sum()), images=int(counts[i].sum()))
        for i, c in enumerate(labels.characters)
        if counts[i].sum()
    }
    errors = counts.copy()
    np.fill_diagonal(errors, 0)
    worst = np.argsort(errors, axis=None)[::-1][:TOP_CONFUSIONS]
    confused = [
        Confusion(
            true=labels.characters[t],
            predicted=labels.characters[p],
            count=int(errors[t, p]),
            share_of_true=float(errors[t, p] / counts[t].sum()),
        )
        for t, p in zip(*np.unravel_index(worst, errors.shape), strict=True)
        if errors[t, p] > 0
    ]
    return SetScore(
        images=len(y_true),
        accuracy=float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        balanced_accuracy=float(np.mean([v.accuracy for v in per_class.values()]))
        if per_class
        else 0.0,
        per_class=per_class,
        most_confused=confused,
        confusion=counts.tolist(),
    )


LabelledImages = tuple[np.ndarray, np.ndarray]  # uint8 (N, 28, 28) glyphs, (N,) class indices


def main_holdout(data: NistData) -> str | None:
    """The headline holdout slice: the first, as trainer.data.holdout_slices orders them."""
    return next(iter(data.holdout), None)


def nist_sets(data: NistData, every_slice: bool = True) -> dict[str, LabelledImages]:
    """The NIST sets a model is scored on: the test split and each holdout slice (or only the
    headline slice: what a retrain's gate compares, at a third of the cost)."""
    if not every_slice:
        headline = main_holdout(data)
        holdout = {f"holdout/{headline}": data.holdout[headline]} if headline else {}
        return {"test": (data.x_test, data.y_test), **holdout}
    return {
        "test": (data.x_test, data.y_test),
        **{f"holdout/{k}": v for k, v in data.holdout.items()},
    }


def sets_key(sets: dict[str, LabelledImages]) -> str:
    """A fingerprint of the images and labels of named sets: a model's scores on them are kept
    under it (domain.registry.keep_scores) and recomputed for any other data."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(sets):
        x, y = sets[name]
        digest.update(name.encode())
        for array in (np.ascontiguousarray(x), np.ascontiguousarray(y)):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.data)
    return digest.hexdigest()


def predict_sets(onnx: Path | bytes, sets: dict[str, LabelledImages]) -> dict[str, np.ndarray]:
    """An ONNX model's probabilities (ONNX Runtime, as the service runs it) on each named set."""
    return {name: onnx_probabilities(onnx, x) for name, (x, y) in sets.items() if len(y)}


def score_sets(
    probabilities: dict[str, np.ndarray], sets: dict[str, LabelledImages], labels: LabelSet
) -> dict[str, SetScore]:
    """Each set's scores from a model's probabilities on it, with the expected calibration
    error of its confidences."""
    return {
        name: score(sets[name][1], p.argmax(axis=1), labels).model_copy(
            update={"expected_calibration_error": expected_calibration_error(p, sets[name][1])}
        )
        for name, p in probabilities.items()
    }


def evaluate_sets(
    onnx: Path | bytes, sets: dict[str, LabelledImages], labels: LabelSet
) -> dict[str, SetScore]:
    """Score an ONNX model (with ONNX Runtime, as the service runs it) on each named set."""
    return score_sets(predict_sets(onnx, sets), sets, labels)


def data_sizes(data: NistData) -> dict[str, Any]:
    return {
        "train": len(data.y_train),
        "validation": len(data.y_val),
        "test": len(data.y_test),
        "holdout": {k: len(v[1]) for k, v in data.holdout.items()},
        "class_counts": data.class_counts,
        "pool": data.stats,
    }


def build_report(
    onnx: bytes,
    data: NistData,
    evaluation: dict[str, SetScore],
    architecture: str,
    training: dict[str, Any],
    history: dict[str, list[float]],
    calibration: Calibration | None = None,
) -> ModelReport:
    return ModelReport(
        labels=data.labels.characters,
        architecture=architecture,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        metrics=headline_metrics(evaluation, main_holdout(data), calibration),
        calibration=calibration,
        model=ModelFile(
            onnx_bytes=len(onnx),
            onnx_sha256=hashlib.sha256(onnx).hexdigest(),
            parameters=training.get("parameters"),
        ),
        training=training,
        history=history,
        data=data_sizes(data),
        evaluation=evaluation,
    )


def calibrated(
    onnx: bytes, data: NistData, prior: np.ndarray | None, reference: bytes | None = None
) -> tuple[bytes, Calibration, dict[str, np.ndarray]]:
    """The model with `prior` (the class frequencies it learned) divided out and a temperature
    fitted on the validation split in its graph (replacing any calibration it had), the ECE
    before and after on the validation and test splits and the holdout slice, and the
    calibrated model's probabilities on those sets. The network runs once on each set: the
    calibrated probabilities are the raw ones through `apply_calibration`, checked against
    the calibrated graph itself on a sample (`served_as_scored`).
    `reference`: a warm start's starting model (ONNX); the prior divided out is then the one
    that makes the model read each class of the validation split as often as it did."""
    raw = with_calibration(onnx, 1.0)
    sets = {"validation": (data.x_val, data.y_val)} | nist_sets(data, every_slice=False)
    probabilities = {k: (onnx_probabilities(raw, x), y) for k, (x, y) in sets.items()}
    read = None if reference is None else onnx_probabilities(reference, data.x_val).argmax(1)
    calibration = calibrate(probabilities, prior, reference=read)
    served = None if calibration.learned_prior is None else np.array(calibration.learned_prior)
    model = with_calibration(onnx, calibration.temperature, served)
    scored = {
        k: apply_calibration(p, calibration.temperature, served).astype(np.float32)
        for k, (p, _) in probabilities.items()
    }
    served_as_scored(model, data.x_test, scored["test"])
    return model, calibration, scored


def served_as_scored(
    model: bytes, images: np.ndarray, scored: np.ndarray, count: int = 256
) -> None:
    """Raise unless the model's graph gives, on the first `count` images, the probabilities
    scored for them: what the gate compares is what the service will run."""
    if len(images) and not np.allclose(
        onnx_probabilities(model, images[:count]), scored[:count], rtol=1e-3, atol=1e-5
    ):
        raise RuntimeError("the calibrated graph does not give the probabilities scored for it")


def evaluate_onnx(
    model_path: Path, data: NistData, out_dir: Path | None = None, calibrate: bool = False
) -> ModelReport:
    """Score an ONNX model file on the NIST sets and (re)write its report next to it (or in
    `out_dir`), keeping the training record and history of an existing report there. With
    `calibrate`, first calibrate it (the class frequencies it learned from the training split,
    weighed by its report's class_balance, divided out; a temperature fitted) and write the
    calibrated model back."""
    model_path = Path(model_path)
    out_dir = Path(out_dir or model_path.parent)
    previous = _read_json(out_dir / "report.json")
    onnx = model_path.read_bytes()
    calibration = (
        Calibration.model_validate(previous["calibration"]) if previous.get("calibration") else None
    )
    if calibrate:
        balance = previous.get("training", {}).get("class_balance", TrainingConfig.class_balance)
        prior = learned_prior(data.y_train, len(data.labels), balance)
        onnx, calibration, _ = calibrated(onnx, data, prior)
        model_path.write_bytes(onnx)
    report = build_report(
        onnx,
        data,
        evaluate_sets(onnx, nist_sets(data), data.labels),
        previous.get("architecture", "unknown"),
        previous.get("training", {}),
        previous.get("history", {}),
        calibration,
    )
    write_report(report, out_dir)
    return report


def write_report(report: ModelReport, out_dir: Path) -> None:
    """report.json, report.md, labels.txt and the plots (confusion matrices, curves)."""
    labels = LabelSet(report.labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    headline = report.metrics.holdout_slice
    plot_confusion(
        np.array(report.evaluation["test"].confusion),
        labels,
        "test split",
        out_dir / "confusion.png",
    )
    if headline:
        plot_confusion(
            np.array(report.evaluation[f"holdout/{headline}"].confusion),
            labels,
            f"holdout {headline}",
            out_dir / "confusion-holdout.png",
        )
    if report.history:
        plot_curves(report.history, out_dir / "curves.png")
    (out_dir / "report.json").write_text(report.model_dump_json(indent=1) + "\n")
    (out_dir / "report.md").write_text(report_markdown(report))
    (out_dir / "labels.txt").write_text(report.labels + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def plot_confusion(counts: np.ndarray, labels: LabelSet, title: str, path: Path) -> None:
    """Row-normalised confusion matrix; the diagonal is left out so that errors stand out."""
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    errors = rates.copy()
    np.fill_diagonal(errors, np.nan)
    size = 4 + 0.16 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=80)
    image = ax.imshow(errors, cmap="magma_r", vmin=0, vmax=max(np.nanmax(errors), 0.01))
    ax.set_xticks(range(len(labels)), labels.classes, fontsize=7)
    ax.set_yticks(range(len(labels)), labels.classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"Errors (share of the true class), {title}: accuracy {accuracy:.2%}")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: dict[str, list[float]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=80)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = history.get(prefix + metric)
            if values:
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, values, style, label="validation" if prefix else "training")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report_markdown(report: ModelReport) -> str:
    model, training = report.model, report.training
    lines = [
        f"# Model report: {report.architecture}, {len(report.labels)} classes",
        "",
        f"Labels: `{report.labels}`  ",
        f"Created: {report.created_at}  ",
        f"ONNX: {model.onnx_bytes / 1024:.0f} KiB, sha256 `{model.onnx_sha256[:16]}…`",
    ]
    if training:
        lines += [
            "",
            "## Training",
            "",
            "| parameters | epochs | augmentation | images per epoch | seconds | command |",
            "|---|---|---|---|---|---|",
            f"| {training.get('parameters') or 0:,} | {training.get('epochs', '?')} "
            f"| {'yes' if training.get('augment') else 'no'} | {training.get('train_size', 0):,} "
            f"| {training.get('seconds', 0):.0f} | `{training.get('command', '')}` |",
        ]
    lines += [
        "",
        "## Accuracy (ONNX Runtime)",
        "",
        "| data | images | accuracy | balanced |",
        "|---|---|---|---|",
    ]
    for name, result in report.evaluation.items():
        lines.append(
            f"| {name} | {result.images:,} | {result.accuracy:.2%} "
            f"| {result.balanced_accuracy:.2%} |"
        )
    lines += _calibration_lines(report.calibration)
    headline = report.metrics.holdout_slice
    for name in ["test", *([f"holdout/{headline}"] if headline else [])]:
        lines += _set_details(name, report.evaluation[name])
    lines += ["", "![confusion](confusion.png)", ""]
    if headline:
        lines += ["![confusion on the holdout](confusion-holdout.png)", ""]
    if report.history:
        lines += ["![training curves](curves.png)", ""]
    return "\n".join(lines)


def _calibration_lines(calibration: Calibration | None) -> list[str]:
    if calibration is None:
        return ["", "## Calibration", "", "None: the confidences are the network's own."]
    if calibration.learned_prior is None:
        how = "probabilities become softmax(log p / T)"
    else:
        least, most = min(calibration.learned_prior), max(calibration.learned_prior)
        how = (
            f"after the class frequencies learned in training, {least:.1%} to {most:.1%} per "
            "class, are divided out so that every class is equal a priori: "
            "softmax((log p - log prior) / T)"
        )
    lines = [
        "",
        "## Calibration",
        "",
        f"Temperature {calibration.temperature:.3f}, fitted on the {calibration.fitted_on} "
        f"({how}, in the ONNX graph). Expected calibration error, {calibration.bins} bins "
        '("before": the network\'s own probabilities):',
        "",
        "| data | before | after |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {before:.2%} | {calibration.ece_after[name]:.2%} |"
        for name, before in calibration.ece_before.items()
    ]
    return lines


def _set_details(name: str, result: SetScore) -> list[str]:
    lines = ["", f"## Most confused, {name}", "", "| true | predicted | count | share of true |"]
    lines.append("|---|---|---|---|")
    lines += [
        f"| {c.true} | {c.predicted} | {c.count} | {c.share_of_true:.1%} |"
        for c in result.most_confused
    ]
    lines += ["", f"## Per-class accuracy, {name}", "", "| class | accuracy | images |"]
    lines.append("|---|---|---|")
    lines += [f"| {c} | {v.accuracy:.1%} | {v.images} |" for c, v in result.per_class.items()]
    return lines
