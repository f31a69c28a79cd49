"""A few real NIST images for API tests, read straight from the EMNIST files."""

import gzip
from pathlib import Path

import numpy as np

from core.config import get_settings

BALANCED_HOLDOUT = "emnist-holdout/emnist-balanced-train-103680-112799"


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def balanced_holdout(count: int) -> tuple[np.ndarray, list[str]]:
    """The first `count` images of the writer-disjoint holdout, upright, with their characters."""
    base = Path(get_settings().nist_data_dir) / BALANCED_HOLDOUT
    images = read_idx(Path(f"{base}-images-idx3-ubyte.gz"))[:count].transpose(0, 2, 1)
    labels = read_idx(Path(f"{base}-labels-idx1-ubyte.gz"))[:count]
    mapping_path = base.parent / "emnist-balanced-mapping.txt"
    mapping = dict(
        (int(parts[0]), chr(int(parts[1])))
        for parts in (line.split() for line in mapping_path.read_text().splitlines())
    )
    return images, [mapping[int(label)] for label in labels]
