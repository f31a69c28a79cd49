"""Real NIST characters for tests and benchmarks, read straight from the EMNIST files."""

from functools import lru_cache

import numpy as np

from core.config import EMNIST_BALANCED_LABELS
from testkit.stack import NIST_DATA_DIR
from trainer.data import EmnistSplit, read_split

BALANCED_HOLDOUT = "emnist-holdout/emnist-balanced-train-103680-112799-images-idx3-ubyte.gz"
DIGITS_HOLDOUT = "emnist-holdout/emnist-digits-train-228096-239999-images-idx3-ubyte.gz"
BYMERGE_TEST = "emnist/emnist-bymerge-test-images-idx3-ubyte.gz"


@lru_cache
def _split(relative: str) -> EmnistSplit:
    return read_split(NIST_DATA_DIR / relative)


def _characters(split: EmnistSplit, labels: np.ndarray) -> list[str]:
    """Each label as one character of the service's 47-class set."""
    chars = {
        number: sorted(c for c in characters if c in EMNIST_BALANCED_LABELS)[0]
        for number, characters in split.characters.items()
    }
    return [chars[int(n)] for n in labels]


def balanced_holdout(count: int, offset: int = 0) -> tuple[np.ndarray, list[str]]:
    """Images of the writer-disjoint holdout (upright uint8 28x28, white on black) and their
    characters: writers the bundled model never saw. Evaluation only, never training."""
    split = _split(BALANCED_HOLDOUT)
    end = offset + count
    return split.images[offset:end], _characters(split, split.labels[offset:end])


def holdout_digit(digit: str) -> np.ndarray:
    """Every image of one digit in the writer-disjoint digits holdout (about 1,200 of each, six
    times the balanced holdout's): enough to tell a 2-point change from a retrain's noise (a
    standard error near 1 point). Evaluation only, never training."""
    split = _split(DIGITS_HOLDOUT)
    return split.images[np.array(_characters(split, split.labels)) == digit]


def nist_glyphs(count: int, offset: int = 0) -> tuple[np.ndarray, list[str]]:
    """Images of the EMNIST bymerge test split (116k images) and their characters."""
    split = _split(BYMERGE_TEST)
    if offset + count > len(split.images):
        raise ValueError(f"only {len(split.images)} NIST test images; asked for {offset + count}")
    end = offset + count
    return split.images[offset:end], _characters(split, split.labels[offset:end])


@lru_cache
def _training_part() -> tuple[np.ndarray, np.ndarray]:
    from trainer.data import load_nist

    data = load_nist()
    return data.x_train, np.array(list(data.labels.characters))[data.y_train]


def training_characters(
    count: int, offset: int = 0, character: str | None = None
) -> tuple[np.ndarray, list[str]]:
    """Images of the training part of the NIST pool (of one character, if given) and their
    characters: what test uploads meant for training are made of (never test or holdout)."""
    images, characters = _training_part()
    chosen = np.flatnonzero(characters == character) if character else np.arange(len(characters))
    chosen = chosen[offset : offset + count]
    return images[chosen], [str(c) for c in characters[chosen]]
