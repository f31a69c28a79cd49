"""Training: NIST data (plus optional user samples) -> a trained Keras model.

`train_model` is the one training loop, for the CLI and for a worker's retrain (both through
trainer.pipeline): a `TrainingConfig` says how, `ExtraSamples` adds user samples (repeated),
saved weights give a warm start, and a progress callback may also stop the run.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.labels import LabelSet
from trainer.augment import Distortion, random_distortion, vary_ink
from trainer.calibrate import learned_prior
from trainer.config import ExtraSamples, TrainingConfig
from trainer.data import NistData
from trainer.model import build_model


@dataclass(frozen=True)
class TrainingProgress:
    epoch: int  # 1-based, the epoch under way
    epochs: int
    step: int  # steps done in this epoch
    steps: int  # steps per epoch
    fraction: float  # of the whole run, 0..1
    logs: dict[str, float]


# Return False to stop training (e.g. the run was cancelled); None or True to go on.
ProgressHook = Callable[[TrainingProgress], bool | None]


@dataclass
class TrainedModel:
    model: keras.Model
    labels: LabelSet
    config: TrainingConfig
    train_size: int  # images per epoch, extra samples and their copies included
    train_seconds: float
    learned_prior: np.ndarray  # the class frequencies its loss saw (trainer.calibrate)
    history: dict[str, list[float]] = field(default_factory=dict)
    stopped_early: bool = False


class _ProgressCallback(keras.callbacks.Callback):
    def __init__(self, hook: ProgressHook, epochs: int, steps: int, every: int) -> None:
        super().__init__()
        self.hook, self.epochs, self.steps, self.every = hook, epochs, steps, every
        self.epoch = 0
        self.stopped = False

    def _report(self, step: int, logs: dict | None) -> None:
        fraction = (self.epoch + step / self.steps) / self.epochs
        progress = TrainingProgress(
            epoch=self.epoch + 1,
            epochs=self.epochs,
            step=step,
            steps=self.steps,
            fraction=min(fraction, 1.0),
            logs={k: float(v) for k, v in (logs or {}).items()},
        )
        if self.hook(progress) is False:
            self.model.stop_training = True
            self.stopped = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (batch + 1) % self.every == 0 and batch + 1 < self.steps:
            self._report(batch + 1, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._report(self.steps, logs)


def to_model_input(images: tf.Tensor) -> tf.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 28, 28, 1) in [0, 1], as core.preprocessing makes."""
    return tf.cast(images, tf.float32)[..., None] / 255.0


def epoch_order(y: np.ndarray, max_per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """The indices one epoch visits, shuffled: every image, or at most `max_per_class` of
    each class (a fresh draw each epoch), so that the digits, half of NIST, do not take half
    of the training time."""
    if max_per_class is None:
        return rng.permutation(len(y))
    chosen = [rng.permutation(np.flatnonzero(y == c))[:max_per_class] for c in np.unique(y)]
    return rng.permutation(np.concatenate(chosen))


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: np.ndarray | None = None,
    augment: Distortion | None = None,
    seed: int = 0,
    ink_variation: float = 0.0,
) -> tf.data.Dataset:
    """Batches of (float images, labels) in `order` (default: as stored), augmented or not;
    batch number n is distorted from the seed (seed, n), so a run can be repeated exactly.
    `ink_variation`: the share of images whose ink varies (trainer.augment.vary_ink).
    `y` is class indices (N,), or target distributions (N, classes)."""
    images = tf.constant(x)
    labels = tf.constant(y.astype(np.float32 if y.ndim == 2 else np.int32))
    indices = np.arange(len(y)) if order is None else order
    dataset = tf.data.Dataset.from_tensor_slices(indices).batch(batch_size).enumerate()

    def prepare(number: tf.Tensor, batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch_images = to_model_input(tf.gather(images, batch))
        if augment is not None:
            batch_seed = tf.stack([tf.constant(seed, tf.int64), number])
            batch_images = random_distortion(batch_images, batch_seed, augment)
        if ink_variation:
            ink_seed = tf.stack([tf.constant(seed + 1, tf.int64), number])
            batch_images = vary_ink(batch_images, ink_seed, ink_variation)
        return batch_images, tf.gather(labels, batch)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def class_weights(y: np.ndarray, num_classes: int, power: float) -> dict[int, float]:
    """Weights (1 / frequency) ** power, mean 1 over the images: 0 leaves the natural
    frequencies (digits are 50 % of NIST), 1 counts every class equally."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    weights /= (weights * counts).sum() / counts.sum()
    return {i: float(w) for i, w in enumerate(weights)}


def training_arrays(
    data: NistData, config: TrainingConfig, extra: ExtraSamples | None
) -> tuple[np.ndarray, np.ndarray]:
    """The NIST training images (all, or a fixed random `max_train` of them), the pictures
    rendered from them (`rendered_per_kind`), plus the extra samples' copies."""
    x_train, y_train = data.x_train, data.y_train
    if config.max_train is not None and config.max_train < len(y_train):
        rng = np.random.default_rng(config.seed)
        chosen = np.sort(rng.choice(len(y_train), config.max_train, replace=False))
        x_train, y_train = x_train[chosen], y_train[chosen]
    if config.rendered_per_kind:
        from trainer.rendered import rendered_set

        x_rendered, y_rendered = rendered_set(
            x_train, y_train, config.rendered_per_kind, config.seed
        )
        x_train, y_train = (
            np.concatenate([x_train, x_rendered]),
            np.concatenate([y_train, y_rendered]),
        )
    if extra is not None and len(extra):
        x_train = np.concatenate([x_train, *[np.asarray(extra.x, np.uint8)] * extra.copies])
        y_train = np.concatenate([y_train, *[np.asarray(extra.y, np.int32)] * extra.copies])
    return x_train, y_train


def distilled_targets(
    model: keras.Model, x: np.ndarray, y: np.ndarray, nist: int, weight: float
) -> np.ndarray:
    """(N, classes) targets: on the first `nist` images (1 - weight) their label and `weight`
    what `model` (the starting point) reads; on the rest (the uploads) their label."""
    classes = model.output_shape[-1]
    targets = np.eye(classes, dtype=np.float32)[y]
    if nist:
        teacher = model.predict(to_model_input(x[:nist]), batch_size=1024, verbose=0)
        targets[:nist] = (1 - weight) * targets[:nist] + weight * teacher
    return targets


def _extra_count(extra: ExtraSamples | None) -> int:
    return len(extra) * extra.copies if extra is not None else 0


def balance_labels(
    y_train: np.ndarray, order: np.ndarray, nist: int, config: TrainingConfig
) -> np.ndarray:
    """The labels an epoch's class balance is counted on: the NIST images it sees (the first
    `nist` of y_train), or every image with the extra samples' copies
    (`extra_in_class_balance`)."""
    if config.extra_in_class_balance or nist >= len(y_train):
        return y_train[order]
    return y_train[order[order < nist]]


def train_model(
    data: NistData,
    config: TrainingConfig = TrainingConfig(),
    *,
    extra: ExtraSamples | None = None,
    initial_weights: Path | None = None,
    progress: ProgressHook | None = None,
    progress_every: int = 50,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int | str = "auto",
) -> TrainedModel:
    """Train `config.architecture` on data.x_train (+ extra samples), validating on data.x_val.

    initial_weights: a model.weights.h5 of the same architecture and label set (warm start).
    progress: called every `progress_every` steps and at each epoch's end.
    """
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = training_arrays(data, config, extra)
    num_classes = len(data.labels)
    model = build_model(config.architecture, num_classes)
    if initial_weights is not None:
        model.load_weights(initial_weights)
        if config.freeze_batch_norm:
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False  # Keras 3: inference mode, statistics kept
    rng = np.random.default_rng(config.seed)
    orders = [epoch_order(y_train, config.max_per_class, rng) for _ in range(config.epochs)]
    steps = int(np.ceil(len(orders[0]) / config.batch_size))
    nist = len(y_train) - _extra_count(extra)
    targets = y_train
    if config.distill and initial_weights is not None:
        targets = distilled_targets(model, x_train, y_train, nist, config.distill)
    compile_model(model, config, steps, soft=targets.ndim == 2)
    train_set = training_stream(x_train, targets, orders, config)
    val_labels = (
        np.eye(num_classes, dtype=np.float32)[data.y_val] if targets.ndim == 2 else data.y_val
    )
    val_set = make_dataset(data.x_val, val_labels, 512)
    hook = None
    if progress is not None:
        hook = _ProgressCallback(progress, config.epochs, steps, progress_every)

    balance = balance_labels(y_train, orders[0], nist, config)
    start = time.perf_counter()
    history = model.fit(
        train_set,
        validation_data=val_set if len(data.y_val) else None,
        epochs=config.epochs,
        steps_per_epoch=steps,
        class_weight=class_weights(balance, num_classes, config.class_balance),
        callbacks=[*(callbacks or []), *([hook] if hook else [])],
        verbose=verbose,
    )
    if config.ema:  # fit() has swapped in the averaged weights; their batch statistics follow
        refresh_batch_norm(model, train_set)
    return TrainedModel(
        model=model,
        labels=data.labels,
        config=config,
        train_size=len(orders[0]),
        train_seconds=time.perf_counter() - start,
        learned_prior=learned_prior(balance, num_classes, config.class_balance),
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        stopped_early=bool(hook and hook.stopped),
    )


def compile_model(
    model: keras.Model, config: TrainingConfig, steps: int, soft: bool = False
) -> None:
    """AdamW on one cycle of cosine decay with a short warm-up: no schedule to tune per run
    length."""
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=max(1, config.epochs * steps - steps // 4),
        warmup_target=config.learning_rate,
        warmup_steps=steps // 4,
        alpha=0.01,
    )
    # The average spans the last ~10% of the run's steps, whatever its length.
    ema_momentum = float(np.clip(1 - 10 / (config.epochs * steps), 0.9, 0.9999))
    optimizer = keras.optimizers.AdamW(
        schedule, weight_decay=1e-4, use_ema=config.ema, ema_momentum=ema_momentum
    )
    metric = "categorical_accuracy" if soft else "accuracy"
    model.compile(optimizer=optimizer, loss=training_loss(config, soft), metrics=[metric])


def refresh_batch_norm(model: keras.Model, train_set: tf.data.Dataset, batches: int = 100) -> None:
    """Re-estimate batch-norm statistics for the current (averaged) weights: forward passes in
    training mode update the moving means and variances (momentum 0.9: 100 batches suffice)
    and nothing else, since no gradient is applied."""
    for images, _ in train_set.take(batches):
        model(images, training=True)


def training_loss(
    config: TrainingConfig, soft: bool = False
) -> str | Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Cross-entropy on class indices (or on target distributions, `soft`), with labels
    smoothed when the config asks."""
    if soft:
        return keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    if not config.label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        classes = tf.shape(y_pred)[-1]
        one_hot = tf.one_hot(tf.reshape(tf.cast(y_true, tf.int32), [-1]), classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=config.label_smoothing
        )

    return smoothed_crossentropy


def training_stream(
    x_train: np.ndarray, y_train: np.ndarray, orders: list[np.ndarray], config: TrainingConfig
) -> tf.data.Dataset:
    """All epochs' orders in one endless stream; each epoch is `steps` batches of it."""
    return make_dataset(
        x_train,
        y_train,
        config.batch_size,
        order=np.concatenate(orders),
        augment=Distortion().scaled(config.augment_strength) if config.augment else None,
        seed=config.seed,
        ink_variation=config.ink_variation,
    ).repeat()
