"""The NIST handwritten characters (EMNIST files), read for one label set.

`emnist/` is the training pool: every split found there is merged, de-duplicated by pixel
content and carved into train/validation/test by a hash of the pixels, so that an image
always lands in the same part however often (and with whatever label set) it is read.
`emnist-holdout/` is read separately and only ever used for evaluation; any pool image with
the same pixels as a holdout image is removed from the pool.

Usage:
    data = load_nist(labels=LabelSet("0123456789"))
    data.x_train.shape  # (N, 28, 28) uint8, upright, white ink on black
"""

import gzip
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np

from core.config import get_settings
from core.labels import LOOKALIKE_LOWERCASE, LabelSet

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension
IMAGE_SIDE = 28

# Splits whose uppercase class also holds the look-alike lowercase letter (c/C, o/O, ...).
MERGED_KINDS = frozenset({"bymerge", "balanced"})

# Percent of the pool per part, by pixel hash: 80 / 10 / 10.
VALIDATION_FROM, TEST_FROM = 80, 90

_CACHE_VERSION = 1
_SPLIT_FILE = re.compile(
    r"^emnist-(?P<kind>[a-z]+)-(?P<part>train|test)(?P<range>-\d+-\d+)?-images-idx3-ubyte\.gz$"
)


class NistDataError(ValueError):
    """The EMNIST files are missing or not what they claim to be."""


@dataclass(frozen=True)
class EmnistSplit:
    """One EMNIST split as stored, with the meaning of each of its label numbers."""

    name: str  # e.g. "byclass-test", "balanced-train-103680-112799"
    kind: str  # byclass, bymerge, balanced, letters, digits or mnist
    images: np.ndarray  # (N, 28, 28) uint8, upright
    labels: np.ndarray  # (N,) uint8, the split's own label numbers
    characters: dict[int, frozenset[str]]  # label number -> the NIST characters it stands for


@dataclass
class NistData:
    labels: LabelSet
    x_train: np.ndarray  # (N, 28, 28) uint8, upright, ink bright on black
    y_train: np.ndarray  # (N,) int32, index into labels.characters
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    holdout: dict[str, tuple[np.ndarray, np.ndarray]]  # slice name -> (x, y); evaluation only
    class_counts: dict[str, int]  # images per class in train + validation + test
    stats: dict[str, Any] = field(default_factory=dict)  # how the pool was built

    def summary(self) -> str:
        lines = [
            f"label set: {len(self.labels)} classes {self.labels.characters!r}",
            f"train {len(self.y_train):,}  validation {len(self.y_val):,}  "
            f"test {len(self.y_test):,}",
            f"duplicates between splits: {self.stats.get('shared_images', {})}",
            "holdout: " + ", ".join(f"{k} {len(v[1]):,}" for k, v in self.holdout.items()),
        ]
        return "\n".join(lines)


# --- Reading the official files -----------------------------------------------------------


def _read_idx(path: Path, magic: int) -> tuple[list[int], bytes]:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise NistDataError(f"{path.name}: magic number {found}, expected {magic}")
    header_size = 4 * (1 + (magic & 0xFF))  # the low byte is the number of dimensions
    if len(raw) < header_size:
        raise NistDataError(f"{path.name}: too short for an IDX header")
    dims = np.frombuffer(raw[4:header_size], dtype=">u4").tolist()
    body = raw[header_size:]
    if len(body) != int(np.prod(dims)):
        raise NistDataError(f"{path.name}: header says {dims}, but {len(body)} bytes follow")
    return dims, body


def read_idx_images(path: Path) -> np.ndarray:
    """(N, 28, 28) uint8 images, turned upright (the files store each image transposed)."""
    dims, body = _read_idx(path, IMAGES_MAGIC)
    if dims[1:] != [IMAGE_SIDE, IMAGE_SIDE]:
        raise NistDataError(f"{path.name}: images are {dims[1:]}, expected 28x28")
    stored = np.frombuffer(body, dtype=np.uint8).reshape(dims)
    return np.ascontiguousarray(stored.transpose(0, 2, 1))


def read_idx_labels(path: Path) -> np.ndarray:
    _, body = _read_idx(path, LABELS_MAGIC)
    return np.frombuffer(body, dtype=np.uint8).copy()


def read_mapping(path: Path, kind: str) -> dict[int, frozenset[str]]:
    """`label ascii [ascii]` lines -> the set of characters each label number stands for."""
    characters: dict[int, frozenset[str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        label, *codes = (int(v) for v in line.split())
        chars = {chr(code) for code in codes}
        if kind in MERGED_KINDS:
            chars |= {c.lower() for c in chars if c.lower() in LOOKALIKE_LOWERCASE}
        characters[label] = frozenset(chars)
    if not characters:
        raise NistDataError(f"{path.name}: empty mapping")
    return characters


def find_split_files(directory: Path) -> list[Path]:
    """The `*-images-idx3-ubyte.gz` files of a directory, in a stable order."""
    return sorted(p for p in directory.glob("emnist-*-images-idx3-ubyte.gz"))


def read_split(images_path: Path) -> EmnistSplit:
    match = _SPLIT_FILE.match(images_path.name)
    if match is None:
        raise NistDataError(f"{images_path.name}: not an EMNIST split file name")
    kind = match["kind"]
    name = images_path.name.removeprefix("emnist-").removesuffix("-images-idx3-ubyte.gz")
    labels_path = images_path.with_name(images_path.name.replace("-images-idx3-", "-labels-idx1-"))
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise NistDataError(f"{name}: {len(images)} images but {len(labels)} labels")
    characters = read_mapping(images_path.with_name(f"emnist-{kind}-mapping.txt"), kind)
    unknown = set(np.unique(labels).tolist()) - set(characters)
    if unknown:
        raise NistDataError(f"{name}: labels {sorted(unknown)} are not in the mapping file")
    return EmnistSplit(name, kind, images, labels, characters)


# --- Labels and hashes ----------------------------------------------------------------------


def class_lookup(split_characters: dict[int, frozenset[str]], labels: LabelSet) -> np.ndarray:
    """Split label number -> class index in `labels`, or -1 where it has no single class.

    A split label maps only if every character it stands for lands in the same class: the
    bymerge "C" (c or C) maps to "C" in the 47-class set but to nothing in the 62-class set,
    and the letters "A" (A or a) maps to nothing in a set that tells "A" and "a" apart.
    """
    lookup = np.full(max(split_characters) + 1, -1, dtype=np.int32)
    for label, chars in split_characters.items():
        classes = {labels.resolve(c) for c in chars}
        if len(classes) == 1 and None not in classes:
            lookup[label] = labels.index(classes.pop())
    return lookup


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each image's pixels: equal images, equal hashes."""
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "little")
            for image in images
        ],
        dtype=np.uint64,
    )


def pool_part(hashes: np.ndarray) -> np.ndarray:
    """0 train, 1 validation, 2 test: from the pixel hash alone, so it never changes."""
    percent = (hashes % np.uint64(100)).astype(np.int64)
    return (percent >= VALIDATION_FROM).astype(np.int8) + (percent >= TEST_FROM).astype(np.int8)


# --- The training pool ----------------------------------------------------------------------


@dataclass
class _Pool:
    """The distinct images of emnist/, with each split's label for them (-1: not in it)."""

    images: np.ndarray  # (M, 28, 28) uint8
    hashes: np.ndarray  # (M,) uint64
    split_names: list[str]
    split_labels: np.ndarray  # (S, M) int16
    stats: dict[str, Any]


def _file_key(paths: Iterable[Path]) -> str:
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(paths)]
    return hashlib.sha256(f"v{_CACHE_VERSION}|{'|'.join(parts)}".encode()).hexdigest()[:16]


def _build_pool(pool_dir: Path, holdout_hashes: set[int]) -> _Pool:
    files = find_split_files(pool_dir)
    if not files:
        raise NistDataError(f"no EMNIST split files in {pool_dir}")
    splits = [read_split(p) for p in files]
    split_hashes = [pixel_hashes(s.images) for s in splits]

    # Pairwise overlaps are reported: byclass-test and bymerge-test share 16,478 images.
    hash_sets = [set(h.tolist()) for h in split_hashes]
    shared = {
        f"{a.name} & {b.name}": len(hash_sets[i] & hash_sets[j])
        for i, a in enumerate(splits)
        for j, b in enumerate(splits)
        if i < j
    }

    all_hashes = np.concatenate(split_hashes)
    all_images = np.concatenate([s.images for s in splits])
    distinct, first = np.unique(all_hashes, return_index=True)
    keep = ~np.isin(distinct, np.fromiter(holdout_hashes, dtype=np.uint64))
    distinct, first = distinct[keep], first[keep]

    split_labels = np.full((len(splits), len(distinct)), -1, dtype=np.int16)
    for row, (split, hashes) in enumerate(zip(splits, split_hashes, strict=True)):
        positions = np.searchsorted(distinct, hashes)
        positions = np.minimum(positions, len(distinct) - 1)
        present = distinct[positions] == hashes
        split_labels[row, positions[present]] = split.labels[present]

    stats = {
        "split_sizes": {s.name: len(s.labels) for s in splits},
        "shared_images": shared,
        "images_read": len(all_hashes),
        "distinct_images": int(len(distinct) + (~keep).sum()),
        "removed_as_holdout": int((~keep).sum()),
    }
    return _Pool(all_images[first], distinct, [s.name for s in splits], split_labels, stats)


def _load_pool(pool_dir: Path, holdout_hashes: set[int], cache_dir: Path | None) -> _Pool:
    holdout_dir = pool_dir.parent / "emnist-holdout"
    key_files = [*pool_dir.glob("emnist-*"), *holdout_dir.glob("emnist-*")]
    cache = cache_dir / f"emnist-pool-{_file_key(key_files)}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            return _Pool(
                saved["images"],
                saved["hashes"],
                json.loads(str(saved["split_names"])),
                saved["split_labels"],
                json.loads(str(saved["stats"])),
            )
    pool = _build_pool(pool_dir, holdout_hashes)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(".partial.npz")
        np.savez(
            partial,
            images=pool.images,
            hashes=pool.hashes,
            split_names=json.dumps(pool.split_names),
            split_labels=pool.split_labels,
            stats=json.dumps(pool.stats),
        )
        partial.replace(cache)  # atomic: a concurrent reader never sees half a file
    return pool


def _pool_classes(pool: _Pool, pool_dir: Path, labels: LabelSet) -> tuple[np.ndarray, int]:
    """The class of each pool image under `labels` (-1: none), and how many splits disagreed.

    Where several splits hold the image, the most specific label that maps wins: byclass "c"
    (one character) over bymerge "C" (c or C).
    """
    classes = np.full(len(pool.hashes), -1, dtype=np.int32)
    specificity = np.full(len(pool.hashes), np.iinfo(np.int32).max, dtype=np.int32)
    conflicts = np.zeros(len(pool.hashes), dtype=bool)
    for row, name in enumerate(pool.split_names):
        kind = name.split("-")[0]
        characters = read_mapping(pool_dir / f"emnist-{kind}-mapping.txt", kind)
        lookup = class_lookup(characters, labels)
        width = np.array([len(characters.get(i, "")) for i in range(len(lookup))], np.int32)
        split_label = pool.split_labels[row]
        present = split_label >= 0
        mapped = np.full(len(classes), -1, dtype=np.int32)
        mapped[present] = lookup[split_label[present]]
        both = (mapped >= 0) & (classes >= 0)
        conflicts |= both & (mapped != classes)
        better = (mapped >= 0) & (width[np.maximum(split_label, 0)] < specificity)
        classes[better] = mapped[better]
        specificity[better] = width[split_label[better]]
    return classes, int(conflicts.sum())


def holdout_slices(
    splits: Iterable[EmnistSplit], labels: LabelSet
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each holdout slice, keeping only the images whose label has a class in `labels`.

    Ordered best match first (the report's headline slice): the most classes covered, then
    the largest share of the slice's own images kept (for digits, the digits slice rather than
    the digits of the balanced one), then the most images.
    """
    ranked = []
    for split in splits:
        classes = class_lookup(split.characters, labels)[split.labels]
        keep = classes >= 0
        if keep.any():
            rank = (len(np.unique(classes[keep])), keep.mean(), int(keep.sum()))
            ranked.append((rank, split.name, (split.images[keep], classes[keep])))
    ranked.sort(key=lambda item: item[0], reverse=True)
    return {name: pair for _, name, pair in ranked}


def load_nist(
    data_dir: Path | None = None,
    labels: LabelSet | None = None,
    cache_dir: Path | EllipsisType | None = ...,
) -> NistData:
    """Read emnist/ (train/validation/test) and emnist-holdout/ (evaluation) for `labels`.

    The label-independent part (reading, hashing, de-duplicating) is cached as an .npz in
    `cache_dir` (default: the CACHE_DIR setting; None: no cache), keyed by the names, sizes
    and times of the data files.
    """
    settings = get_settings()
    if cache_dir is ...:
        cache_dir = settings.cache_dir
    data_dir = Path(data_dir or settings.nist_data_dir)
    labels = labels or LabelSet(settings.labels)
    pool_dir, holdout_dir = data_dir / "emnist", data_dir / "emnist-holdout"
    if not pool_dir.is_dir():
        raise NistDataError(
            f"{pool_dir} does not exist: set NIST_DATA_DIR to the EMNIST data, or fetch it with "
            "`python -m trainer fetch` (a retrain fetches it from NIST_SOURCE itself)"
        )

    holdout_splits = [read_split(p) for p in find_split_files(holdout_dir)]
    holdout_hashes = {h for s in holdout_splits for h in pixel_hashes(s.images).tolist()}
    pool = _load_pool(pool_dir, holdout_hashes, cache_dir)
    classes, conflicts = _pool_classes(pool, pool_dir, labels)

    mapped = classes >= 0
    part = pool_part(pool.hashes)
    arrays = {}
    for index, name in enumerate(("train", "val", "test")):
        chosen = mapped & (part == index)
        arrays[name] = (pool.images[chosen], classes[chosen])

    counts = np.bincount(classes[mapped], minlength=len(labels))
    stats = dict(pool.stats)
    stats["not_in_label_set"] = int((~mapped).sum())
    stats["label_conflicts"] = conflicts
    holdout = holdout_slices(holdout_splits, labels)
    return NistData(
        labels=labels,
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_val=arrays["val"][0],
        y_val=arrays["val"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        holdout=holdout,
        class_counts={c: int(n) for c, n in zip(labels.characters, counts, strict=True)},
        stats=stats,
    )
