"""How a model is trained, without TensorFlow: the CLI and the worker build these cheaply."""

from dataclasses import dataclass

import numpy as np

ARCHITECTURES = ("cnn", "cnn_wide", "resnet", "lenet5")  # trainer.model builds each


@dataclass(frozen=True)
class TrainingConfig:
    """How to train: the CLI's flags and the worker's settings both become one of these."""

    architecture: str = "cnn"
    epochs: int = 4
    augment: bool = True
    augment_strength: float = 1.0  # trainer.augment.Distortion scaled by this
    batch_size: int = 128
    learning_rate: float = 3e-3  # peak of the one-cycle cosine schedule
    # 0 trains on NIST's natural class frequencies, 1 weighs every class equally; in between
    # trades overall accuracy for accuracy on rare classes.
    class_balance: float = 0.5
    # Whether the extra samples' copies count in the class balance (the loss's class weights
    # and the prior divided out afterwards). Counted, 50 copies of 20 uploaded 4s weigh every
    # 4 less and inflate the prior of 4: NIST's own 4s lost 3.3 points in a warm retrain.
    # Not counted (the default), the balance is NIST's and the uploads only add shapes.
    extra_in_class_balance: bool = False
    max_per_class: int | None = None  # each epoch sees at most this many images of a class
    max_train: int | None = None  # a random subset of the NIST training split (None: all)
    # Pictures per kind of testkit/corpus.py drawn from the training split, preprocessed as the
    # API does and mixed into every epoch (trainer/rendered.py); 0: NIST's scans only.
    rendered_per_kind: int = 0
    # The share of images whose ink varies on the fly (trainer.augment.vary_ink: pen thicker or
    # thinner, blur, low resolution, noise, an edge cut off); 0: none.
    ink_variation: float = 0.0
    # Targets (1 - s) on the label and s spread over all classes: softer, less overconfident
    # outputs (the temperature fitted afterwards undoes what is left of it).
    label_smoothing: float = 0.0
    # A warm start learns from its own starting point too: on NIST's images the target is
    # (1 - distill) the label and `distill` what the starting model read (its probabilities),
    # so that learning the uploads does not move what it read right before ("learning without
    # forgetting", Li & Hoiem 2016). The uploads' targets are their labels. 0: labels only.
    distill: float = 0.0
    # Keep the starting model's batch-norm statistics (a warm start): a few hundred steps on a
    # sample of NIST and the uploads would otherwise replace them, shifting every class a little.
    freeze_batch_norm: bool = False
    # Serve an exponential moving average of the weights rather than the last step's. For long
    # runs only: over a warm retrain of a few dozen steps the average barely leaves its start.
    ema: bool = False
    seed: int = 0


@dataclass(frozen=True)
class WarmStart:
    """A retrain that starts from a trained model rather than from scratch."""

    weights: bytes  # Keras model.weights.h5
    # The starting model as served: the candidate is made to read each NIST class as often as
    # it did (trainer.calibrate.matched_prior). None: no such matching.
    onnx: bytes | None = None
    # The class frequencies the starting model learnt, over all of NIST (this run sees a
    # sample): divided out rather than the run's own. None: the run's own.
    prior: np.ndarray | None = None


@dataclass(frozen=True)
class ExtraSamples:
    """Samples beyond NIST (users' uploads), repeated `copies` times per epoch so that a few
    hundred of them weigh against 170,000 NIST images."""

    x: np.ndarray  # uint8 (N, 28, 28), as core.preprocessing makes them, times 255
    y: np.ndarray  # (N,) class indices
    copies: int = 1

    def __len__(self) -> int:
        return len(self.y)
