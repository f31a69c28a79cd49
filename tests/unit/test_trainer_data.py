"""trainer.data: the real EMNIST files, and small IDX files and archives built here."""

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.config import EMNIST_BALANCED_LABELS, Settings, get_settings
from core.labels import LabelSet
from trainer.data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    NistData,
    NistDataError,
    class_lookup,
    load_nist,
    pixel_hashes,
    read_idx_images,
    read_idx_labels,
    read_mapping,
)
from trainer.fetch import HOLDOUT_SLICES, POOL_SPLITS, fetch_emnist

DIGITS = "0123456789"
FIFTEEN = "0123456789ABCDE"
SIXTY_TWO = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DATA_DIR = Settings().nist_data_dir

needs_data = pytest.mark.skipif(
    not (DATA_DIR / "emnist").is_dir(), reason=f"NIST data not found in {DATA_DIR}"
)


def write_idx(path: Path, magic: int, array: np.ndarray, dims: list[int] | None = None) -> None:
    header = np.array([magic, *(dims if dims is not None else array.shape)], dtype=">u4")
    path.write_bytes(gzip.compress(header.tobytes() + array.astype(np.uint8).tobytes()))


def pool_hashes(data: NistData) -> dict[str, set[int]]:
    return {
        "train": set(pixel_hashes(data.x_train).tolist()),
        "val": set(pixel_hashes(data.x_val).tolist()),
        "test": set(pixel_hashes(data.x_test).tolist()),
    }


@pytest.fixture(scope="module")
def balanced() -> NistData:
    return load_nist(DATA_DIR, LabelSet(EMNIST_BALANCED_LABELS))


# --- IDX files and mappings -------------------------------------------------------------------


def test_idx_images_are_turned_upright(tmp_path: Path) -> None:
    upright = np.zeros((2, 28, 28), dtype=np.uint8)
    upright[0, 3, :] = 255  # a horizontal bar in row 3
    upright[1, :, 5] = 200  # a vertical bar in column 5
    path = tmp_path / "images.gz"
    write_idx(path, IMAGES_MAGIC, upright.transpose(0, 2, 1))  # stored transposed, like NIST
    np.testing.assert_array_equal(read_idx_images(path), upright)


def test_idx_header_is_checked(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    wrong_magic = tmp_path / "wrong-magic.gz"
    write_idx(wrong_magic, LABELS_MAGIC + 1, images)
    with pytest.raises(NistDataError, match="magic"):
        read_idx_images(wrong_magic)
    wrong_count = tmp_path / "wrong-count.gz"
    write_idx(wrong_count, IMAGES_MAGIC, images, dims=[4, 28, 28])  # says 4, holds 3
    with pytest.raises(NistDataError, match="bytes follow"):
        read_idx_images(wrong_count)
    wrong_size = tmp_path / "wrong-size.gz"
    write_idx(wrong_size, IMAGES_MAGIC, np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(NistDataError, match="28x28"):
        read_idx_images(wrong_size)
    labels = tmp_path / "labels.gz"
    write_idx(labels, LABELS_MAGIC, np.array([1, 2, 3]))
    np.testing.assert_array_equal(read_idx_labels(labels), [1, 2, 3])
    with pytest.raises(NistDataError, match="magic"):
        read_idx_images(labels)


def test_mappings_say_which_characters_a_label_stands_for(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("0 48\n10 65\n12 67\n36 97\n")
    assert read_mapping(mapping, "byclass") == {
        0: {"0"},
        10: {"A"},
        12: {"C"},
        36: {"a"},
    }
    # In bymerge and balanced, "C" also holds the look-alike "c"; "A" and "a" stay apart.
    merged = read_mapping(mapping, "bymerge")
    assert merged[12] == {"C", "c"} and merged[10] == {"A"} and merged[36] == {"a"}
    letters = tmp_path / "letters.txt"
    letters.write_text("1 65 97\n3 67 99\n")
    assert read_mapping(letters, "letters") == {1: {"A", "a"}, 3: {"C", "c"}}


def test_a_label_maps_only_to_a_single_class() -> None:
    letters = {1: frozenset("Aa"), 3: frozenset("Cc")}
    merged = {12: frozenset("Cc"), 0: frozenset("0")}
    balanced, sixty_two = LabelSet(EMNIST_BALANCED_LABELS), LabelSet(SIXTY_TWO)
    # "A or a": two classes in both sets, so unusable; "C or c" is one class in the 47 set.
    assert class_lookup(letters, balanced)[[1, 3]].tolist() == [-1, balanced.index("C")]
    assert class_lookup(merged, sixty_two)[[0, 12]].tolist() == [0, -1]
    assert class_lookup(merged, LabelSet(DIGITS))[[0, 12]].tolist() == [0, -1]
    # Lowercase "c" of byclass joins "C" when the set has no "c".
    assert class_lookup({5: frozenset("c")}, LabelSet(FIFTEEN))[5] == FIFTEEN.index("C")


# --- The real data -------------------------------------------------------------------------


@needs_data
def test_duplicates_between_splits_are_counted_and_removed(balanced: NistData) -> None:
    stats = balanced.stats
    assert stats["shared_images"]["byclass-test & bymerge-test"] == 16_478  # per the README
    hashes = pool_hashes(balanced)
    pool_size = len(balanced.y_train) + len(balanced.y_val) + len(balanced.y_test)
    assert sum(len(h) for h in hashes.values()) == pool_size  # no image twice in the pool
    assert (
        pool_size + stats["not_in_label_set"] + stats["removed_as_holdout"]
        == (stats["distinct_images"])
    )
    assert stats["distinct_images"] < stats["images_read"] - 16_478
    assert stats["label_conflicts"] == 0  # byclass and bymerge agree on every shared image


@needs_data
def test_splits_are_stable_disjoint_and_80_10_10(balanced: NistData) -> None:
    fresh = load_nist(DATA_DIR, LabelSet(EMNIST_BALANCED_LABELS), cache_dir=None)
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(fresh, part), getattr(balanced, part))
    hashes = pool_hashes(balanced)
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]
    total = sum(len(h) for h in hashes.values())
    assert len(hashes["train"]) / total == pytest.approx(0.8, abs=0.01)
    assert len(hashes["test"]) / total == pytest.approx(0.1, abs=0.01)


@needs_data
def test_holdout_never_appears_in_the_pool(balanced: NistData) -> None:
    seen = set().union(*pool_hashes(balanced).values())
    for name, (x, _) in balanced.holdout.items():
        assert not seen & set(pixel_hashes(x).tolist()), name
    # EMNIST's own train and test splits share images: they are taken out of the pool.
    assert balanced.stats["removed_as_holdout"] > 0


@needs_data
def test_images_are_upright_white_on_black(balanced: NistData) -> None:
    # The 47-class holdout's "1"s: tall and narrow only if the images are upright.
    x, y = balanced.holdout["balanced-train-103680-112799"]
    ones = x[y == balanced.labels.index("1")].astype(np.float32)
    rows_with_ink = (ones > 128).any(axis=2).sum(axis=1).mean()
    cols_with_ink = (ones > 128).any(axis=1).sum(axis=1).mean()
    assert rows_with_ink > 2 * cols_with_ink
    images = balanced.x_train[:1000].astype(np.float32)
    frame = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]])
    assert frame.mean() < 5 < 20 < images.mean()  # black around, white ink inside


@needs_data
@pytest.mark.parametrize(
    ("characters", "main_slice"),
    [
        (EMNIST_BALANCED_LABELS, "balanced-train-103680-112799"),
        (DIGITS, "digits-train-228096-239999"),
        (FIFTEEN, "balanced-train-103680-112799"),
        (SIXTY_TWO, "balanced-train-103680-112799"),
    ],
    ids=["47", "10", "15", "62"],
)
def test_each_label_set_loads_with_all_its_classes(
    characters: str, main_slice: str, balanced: NistData
) -> None:
    data = load_nist(DATA_DIR, LabelSet(characters))
    assert len(data.class_counts) == len(characters)
    assert min(data.class_counts.values()) > 200  # every class has real data
    for y in (data.y_train, data.y_val, data.y_test):
        assert set(np.unique(y).tolist()) == set(range(len(characters)))
    assert sum(data.class_counts.values()) == len(data.y_train) + len(data.y_val) + len(data.y_test)
    x, y = data.holdout[main_slice]
    assert len(x) == len(y) > 0 and y.max() < len(characters)
    if characters == DIGITS:
        assert "letters-train-85264-88799" not in data.holdout
        assert len(data.holdout["mnist-train-42632-59999"][1]) == 17_368
    if characters == EMNIST_BALANCED_LABELS:
        assert len(y) == 9_120 and len(np.unique(y)) == 47
        # Letters (labels 1-26, "A or a"): only the look-alike ones have a single class.
        letters = {data.labels.characters[i] for i in data.holdout["letters-train-85264-88799"][1]}
        assert letters == set("CIJKLMOPSUVWXYZ")
    if characters == SIXTY_TWO:
        # Lowercase look-alikes come only from byclass (where an image is in byclass and
        # bymerge, byclass's "c" beats bymerge's "c or C"); bymerge-only ones are dropped.
        assert data.class_counts["c"] > 0 and data.class_counts["C"] > 0
        both = data.class_counts["c"] + data.class_counts["C"]
        assert both < balanced.class_counts["C"]


# --- Fetching the official archive --------------------------------------------------------


def official_archive(tmp_path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """A gzip.zip laid out like NIST's: gzip/emnist-{split}-{images,labels}-..., mappings."""
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    archive = tmp_path / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split, (images, labels) in splits.items():
            write_idx(staging / "images", IMAGES_MAGIC, images.transpose(0, 2, 1))
            write_idx(staging / "labels", LABELS_MAGIC, labels)
            zf.write(staging / "images", f"gzip/emnist-{split}-images-idx3-ubyte.gz")
            zf.write(staging / "labels", f"gzip/emnist-{split}-labels-idx1-ubyte.gz")
        mapping = "".join(f"{d} {48 + d}\n" for d in range(10))
        for kind in ("digits", "mnist"):
            zf.writestr(f"gzip/emnist-{kind}-mapping.txt", mapping)
        zf.writestr("gzip/emnist-letters-test-images-idx3-ubyte.gz", b"not wanted")
        zf.writestr("../../emnist-escape.txt", b"must not leave the target")
    return archive


def random_split(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, 10, count).astype(np.uint8)


def test_fetch_unpacks_the_official_archive_layout(tmp_path: Path) -> None:
    images, labels = random_split(0, 50)
    archive = official_archive(tmp_path, {"digits-test": (images, labels)})

    data_dir = tmp_path / "data"
    written = fetch_emnist(data_dir, archive.as_uri(), splits=["digits-test"], holdout={})
    assert [p.name for p in written] == [
        "emnist-digits-mapping.txt",
        "emnist-digits-test-images-idx3-ubyte.gz",
        "emnist-digits-test-labels-idx1-ubyte.gz",
    ]
    assert all(p.parent == data_dir / "emnist" for p in written)
    assert sorted(p.name for p in (data_dir / "emnist").iterdir()) == [p.name for p in written]

    data = load_nist(data_dir, LabelSet(DIGITS), cache_dir=None)
    loaded = np.concatenate([data.x_train, data.x_val, data.x_test])
    assert len(loaded) == 50
    assert set(pixel_hashes(loaded).tolist()) == set(pixel_hashes(images).tolist())
    assert data.holdout == {}

    # A plain path works too; no name in the archive leads out of the target directory.
    again = fetch_emnist(tmp_path / "again", str(archive), ["digits-test"], holdout={})
    assert [p.name for p in again] == [p.name for p in written]
    assert not list(tmp_path.glob("emnist-escape.txt"))
    assert not list(tmp_path.glob("again/emnist-escape.txt"))
    # An archive without EMNIST files is refused, and so is one without the default splits.
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(NistDataError):
        fetch_emnist(tmp_path / "none", str(empty), holdout={})
    with pytest.raises(NistDataError, match="balanced-train"):
        fetch_emnist(tmp_path / "none", str(archive))


def test_fetch_cuts_the_holdout_slices_from_the_train_splits(tmp_path: Path) -> None:
    pool_images, pool_labels = random_split(1, 40)
    train_images, train_labels = random_split(2, 30)
    # Image 12 of the train split is also in the pool: the pool must drop it (holdout wins).
    pool_images[0] = train_images[12]
    archive = official_archive(
        tmp_path,
        {"mnist-test": (pool_images, pool_labels), "mnist-train": (train_images, train_labels)},
    )
    data_dir = tmp_path / "data"
    written = fetch_emnist(data_dir, str(archive), ["mnist-test"], {"mnist-train": (10, 19)})
    holdout_dir = data_dir / "emnist-holdout"
    assert sorted(p.name for p in holdout_dir.iterdir()) == [
        "emnist-mnist-mapping.txt",
        "emnist-mnist-train-10-19-images-idx3-ubyte.gz",
        "emnist-mnist-train-10-19-labels-idx1-ubyte.gz",
    ]
    assert {p.parent for p in written} == {data_dir / "emnist", holdout_dir}
    cut = read_idx_images(holdout_dir / "emnist-mnist-train-10-19-images-idx3-ubyte.gz")
    assert np.array_equal(cut, train_images[10:20])
    cut_labels = read_idx_labels(holdout_dir / "emnist-mnist-train-10-19-labels-idx1-ubyte.gz")
    assert np.array_equal(cut_labels, train_labels[10:20])

    data = load_nist(data_dir, LabelSet(DIGITS), cache_dir=None)
    assert list(data.holdout) == ["mnist-train-10-19"]
    assert np.array_equal(data.holdout["mnist-train-10-19"][0], train_images[10:20])
    pool = np.concatenate([data.x_train, data.x_val, data.x_test])
    assert len(pool) == 39 and pixel_hashes(train_images[12:13])[0] not in pixel_hashes(pool)

    # A slice past the end of the split is refused, not cut short.
    with pytest.raises(NistDataError, match=r"25\.\.34"):
        fetch_emnist(tmp_path / "short", str(archive), ["mnist-test"], {"mnist-train": (25, 34)})


def test_fetch_copies_a_data_directory(tmp_path: Path) -> None:
    images, labels = random_split(3, 30)
    archive = official_archive(
        tmp_path, {"mnist-test": (images, labels), "mnist-train": (images, labels)}
    )
    first = tmp_path / "first"
    written = fetch_emnist(first, str(archive), ["mnist-test"], {"mnist-train": (0, 4)})
    # A directory holding gzip.zip is read as the archive.
    assert fetch_emnist(tmp_path / "beside", str(tmp_path), ["mnist-test"], {"mnist-train": (0, 4)})
    copied = fetch_emnist(tmp_path / "copy", str(first))
    assert [p.relative_to(tmp_path / "copy") for p in copied] == [
        p.relative_to(first) for p in written
    ]
    for path in written:
        assert (tmp_path / "copy" / path.relative_to(first)).read_bytes() == path.read_bytes()


@needs_data
def test_fetch_defaults_match_the_shared_data_layout() -> None:
    """POOL_SPLITS and HOLDOUT_SLICES give the file names of NIST_DATA_DIR."""
    pool = {p.name for p in (DATA_DIR / "emnist").glob("emnist-*-images-idx3-ubyte.gz")}
    assert pool == {f"emnist-{s}-images-idx3-ubyte.gz" for s in POOL_SPLITS}
    holdout = {p.name for p in (DATA_DIR / "emnist-holdout").glob("emnist-*-images-*")}
    assert holdout == {
        f"emnist-{split}-{first}-{last}-images-idx3-ubyte.gz"
        for split, (first, last) in HOLDOUT_SLICES.items()
    }


def test_the_pool_cache_goes_to_the_cache_dir_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the containers the code's directory is read-only: CACHE_DIR points at a volume."""
    images, labels = random_split(4, 30)
    archive = official_archive(tmp_path, {"mnist-test": (images, labels)})
    data_dir = tmp_path / "data"
    fetch_emnist(data_dir, str(archive), ["mnist-test"], holdout={})
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("CACHE_DIR", str(cache_dir))
    get_settings.cache_clear()
    try:
        assert get_settings().cache_dir == cache_dir
        first = load_nist(data_dir, LabelSet(DIGITS))
        cached = list(cache_dir.glob("emnist-pool-*.npz"))
        assert len(cached) == 1
        again = load_nist(data_dir, LabelSet(DIGITS))  # read back from the cache file
        assert np.array_equal(again.x_train, first.x_train)
    finally:
        monkeypatch.delenv("CACHE_DIR")
        get_settings.cache_clear()
