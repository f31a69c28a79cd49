"""The models: 28x28x1 glyphs in [0, 1] (input "image") -> class probabilities.

Small on purpose: they train on two CPU cores in minutes and serve from a ~1 MB ONNX file.
"""

import keras
import numpy as np
from keras import layers

from core.preprocessing import MODEL_INPUT_NAME, MODEL_INPUT_SHAPE
from trainer.config import ARCHITECTURES


def lenet5(num_classes: int) -> keras.Model:
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling: the baseline."""
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name=MODEL_INPUT_NAME)
    x = layers.Conv2D(6, 5, padding="same", activation="relu")(inputs)  # 28x28x6
    x = layers.MaxPooling2D(2)(x)  # 14x14
    x = layers.Conv2D(16, 5, activation="relu")(x)  # 10x10x16
    x = layers.MaxPooling2D(2)(x)  # 5x5
    x = layers.Flatten()(x)
    x = layers.Dense(120, activation="relu")(x)
    x = layers.Dense(84, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lenet5")


# Batch-norm statistics follow the data faster than Keras's default (0.99), so that short runs
# (a retrain of a few dozen steps) also end with statistics that match their weights.
BN_MOMENTUM = 0.9


def conv_block(x, filters: int, kernel_size: int, padding: str = "same"):
    # No bias: batch normalisation right after has its own.
    x = layers.Conv2D(filters, kernel_size, padding=padding, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU()(x)


def classifier_head(x, num_classes: int, dropout: float):
    """Features -> a 256-unit layer -> class probabilities, with dropout on both sides."""
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(256, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout)(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def cnn(num_classes: int) -> keras.Model:
    """The default: three conv blocks with batch norm, pooling early to keep CPU cost low."""
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name=MODEL_INPUT_NAME)
    x = conv_block(inputs, 32, 5, padding="valid")  # 24x24x32
    x = layers.MaxPooling2D(2)(x)  # 12x12
    x = conv_block(x, 64, 3)
    x = layers.MaxPooling2D(2)(x)  # 6x6
    x = conv_block(x, 128, 3)
    x = layers.MaxPooling2D(2)(x)  # 3x3x128
    return keras.Model(inputs, classifier_head(x, num_classes, dropout=0.3), name="cnn")


def cnn_wide(num_classes: int) -> keras.Model:
    """VGG-like: two 3x3 conv blocks per scale at full resolution, ~4x the default's compute;
    an experiment toward the issue-15 accuracy targets."""
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name=MODEL_INPUT_NAME)
    x = conv_block(inputs, 32, 3)
    x = conv_block(x, 32, 3)
    x = layers.MaxPooling2D(2)(x)  # 14x14
    x = conv_block(x, 64, 3)
    x = conv_block(x, 64, 3)
    x = layers.MaxPooling2D(2)(x)  # 7x7
    x = conv_block(x, 128, 3)
    x = layers.MaxPooling2D(2)(x)  # 3x3x128
    return keras.Model(inputs, classifier_head(x, num_classes, dropout=0.4), name="cnn_wide")


def residual_block(x, filters: int):
    """Two 3x3 conv blocks whose output is added to their input (He et al., 2016)."""
    shortcut = x
    x = conv_block(x, filters, 3)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    return layers.ReLU()(layers.Add()([shortcut, x]))


def resnet(num_classes: int) -> keras.Model:
    """A small ResNet: a residual block at each of 14x14 and 7x7, ~2x the default's compute;
    an experiment toward the issue-15 accuracy targets."""
    inputs = keras.Input(shape=MODEL_INPUT_SHAPE, name=MODEL_INPUT_NAME)
    x = conv_block(inputs, 32, 3)
    x = layers.MaxPooling2D(2)(x)  # 14x14
    x = residual_block(x, 32)
    x = conv_block(x, 64, 3)
    x = layers.MaxPooling2D(2)(x)  # 7x7
    x = residual_block(x, 64)
    x = conv_block(x, 128, 3)
    x = layers.MaxPooling2D(2)(x)  # 3x3x128
    return keras.Model(inputs, classifier_head(x, num_classes, dropout=0.3), name="resnet")


def build_model(architecture: str, num_classes: int) -> keras.Model:
    builders = {"cnn": cnn, "cnn_wide": cnn_wide, "resnet": resnet, "lenet5": lenet5}
    if architecture not in builders:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    return builders[architecture](num_classes)


class ExtremeLearningMachine:
    """A random, fixed hidden layer and a least-squares readout (Huang et al., 2006).

    Trains in seconds with numpy alone: a reference point for what the CNNs' training buys.
    """

    def __init__(self, num_classes: int, hidden: int = 4000, ridge: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        pixels = int(np.prod(MODEL_INPUT_SHAPE))
        self.num_classes = num_classes
        self.input_weights = rng.normal(0, 1 / np.sqrt(pixels), (pixels, hidden)).astype(np.float32)
        self.input_bias = rng.normal(0, 1, hidden).astype(np.float32)
        self.ridge = ridge
        self.output_weights = np.zeros((hidden, num_classes), dtype=np.float32)

    def hidden(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float32)
        return np.maximum(flat @ self.input_weights + self.input_bias, 0.0)

    def fit(self, images: np.ndarray, labels: np.ndarray, chunk: int = 8192) -> None:
        hidden_size = self.input_weights.shape[1]
        gram = np.zeros((hidden_size, hidden_size), dtype=np.float64)
        moments = np.zeros((hidden_size, self.num_classes), dtype=np.float64)
        for start in range(0, len(images), chunk):  # in chunks: H for 200k images is 3 GB
            h = self.hidden(images[start : start + chunk])
            targets = np.eye(self.num_classes, dtype=np.float32)[labels[start : start + chunk]]
            gram += h.T @ h
            moments += h.T @ targets
        gram[np.diag_indices_from(gram)] += self.ridge
        self.output_weights = np.linalg.solve(gram, moments).astype(np.float32)

    def predict(self, images: np.ndarray, chunk: int = 8192) -> np.ndarray:
        scores = np.concatenate(
            [
                self.hidden(images[s : s + chunk]) @ self.output_weights
                for s in range(0, len(images), chunk)
            ]
        )
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores * 10.0)  # a softmax over scores near 0..1
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    @property
    def parameter_count(self) -> int:
        return self.input_weights.size + self.input_bias.size + self.output_weights.size
