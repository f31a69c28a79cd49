"""Fetching the NIST data: NIST's EMNIST archive (or a copy of it, or a directory laid out as
NIST_DATA_DIR) unpacked into emnist/ and emnist-holdout/ (trainer/data.py reads them).

`ensure_nist` is what a retrain calls: on a fresh machine the first run fetches the data from
NIST_SOURCE (NIST's archive by default, about 560 MB), with its progress in the worker's log.
"""

import gzip
import logging
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from core.config import NIST_EMNIST_URL
from trainer.data import (
    _SPLIT_FILE,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    NistDataError,
    find_split_files,
)

log = logging.getLogger(__name__)

# Called with (bytes so far, bytes in all or None) while an archive downloads.
DownloadProgress = Callable[[int, int | None], None]

# emnist/: the official test splits (the pool for train/validation/test).
POOL_SPLITS = ("byclass-test", "bymerge-test", "mnist-test")
# emnist-holdout/: slices of official train splits, by first and last position (inclusive).
HOLDOUT_SLICES = {
    "balanced-train": (103_680, 112_799),
    "digits-train": (228_096, 239_999),
    "letters-train": (85_264, 88_799),
    "mnist-train": (42_632, 59_999),
}


def ensure_nist(data_dir: Path, source: str, progress: DownloadProgress | None = None) -> None:
    """The EMNIST files in `data_dir`, fetched from `source` on first need, so that a fresh
    machine's first retrain needs no other step. NistDataError, saying what to set, where they
    are neither there nor to be had."""
    if find_split_files(Path(data_dir) / "emnist"):
        return
    log.info("no NIST data in %s (NIST_DATA_DIR): fetching it from %s", data_dir, source)
    if progress is not None:
        progress(0, None)  # fetching begins (a download then tells how far it is)
    try:
        written = fetch_emnist(data_dir, source, progress=progress)
    except (OSError, zipfile.BadZipFile, NistDataError) as exc:  # URLError is an OSError
        raise NistDataError(
            f"no NIST data in {data_dir} and none could be fetched from {source} ({exc}): set "
            "NIST_DATA_DIR to the EMNIST data, or NIST_SOURCE to where it can be fetched"
        ) from exc
    log.info("fetched %d NIST files into %s", len(written), data_dir)


def fetch_emnist(
    data_dir: Path,
    source: str = NIST_EMNIST_URL,
    splits: Iterable[str] = POOL_SPLITS,
    holdout: dict[str, tuple[int, int]] | None = None,
    progress: DownloadProgress | None = None,
) -> list[Path]:
    """Fill data_dir/emnist and data_dir/emnist-holdout as NIST_DATA_DIR is laid out.

    `source` is NIST's archive (gzip.zip) as a URL, a file:// URL or a path; or a directory
    laid out like NIST_DATA_DIR (emnist/, emnist-holdout/), whose EMNIST files are copied;
    or a directory holding gzip.zip. From the archive, emnist/ gets the files whose name
    holds one of `splits`, and emnist-holdout/ the `holdout` slices (default HOLDOUT_SLICES)
    cut from the train splits. Returns the files written.
    """
    data_dir = Path(data_dir)
    local = _local_path(source)
    if local is not None and (local / "emnist").is_dir():
        written = _copy_layout(local, data_dir)
    elif local is not None:
        archive = local / "gzip.zip" if local.is_dir() else local
        written = _unpack_archive(archive, data_dir, list(splits), _holdout_or_default(holdout))
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            archive = Path(tmp) / "gzip.zip"
            _download(source, archive, progress)
            written = _unpack_archive(archive, data_dir, list(splits), _holdout_or_default(holdout))
    if not any(p.parent.name == "emnist" and _SPLIT_FILE.match(p.name) for p in written):
        raise NistDataError(f"{source}: no EMNIST image files for emnist/")
    return sorted(written)


def _download(source: str, archive: Path, progress: DownloadProgress | None) -> None:
    """`source` into `archive`, its progress logged every tenth (and passed to `progress`)."""
    log.info("downloading %s", source)
    with urllib.request.urlopen(source, timeout=60) as response, archive.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done, logged = 0, 0.0
        for chunk in iter(partial(response.read, 1 << 20), b""):
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            if total and done / total >= logged + 0.1:
                logged = done / total
                log.info("downloaded %d of %d MB (%.0f%%)", done >> 20, total >> 20, 100 * logged)


def _holdout_or_default(holdout: dict[str, tuple[int, int]] | None) -> dict[str, tuple[int, int]]:
    return HOLDOUT_SLICES if holdout is None else holdout


def _local_path(source: str) -> Path | None:
    if source.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    return None if "://" in source else Path(source)


def _write_atomically(destination: Path, chunks: Iterable[bytes]) -> Path:
    """A reader (or the pool cache key) never sees half a file, even after a crash."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    with partial.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    partial.replace(destination)
    return destination


def _copy_layout(source_dir: Path, data_dir: Path) -> list[Path]:
    written = []
    for part in ("emnist", "emnist-holdout"):
        for path in sorted((source_dir / part).glob("emnist-*")):
            if path.is_file():
                with path.open("rb") as src:
                    chunks = iter(partial(src.read, 1 << 20), b"")
                    copy = _write_atomically(data_dir / part / path.name, chunks)
                # The same times as the same bytes: the pool's cache (keyed by them) still holds.
                shutil.copystat(path, copy)
                written.append(copy)
    return written


def _unpack_archive(
    archive: Path, data_dir: Path, splits: list[str], holdout: dict[str, tuple[int, int]]
) -> list[Path]:
    if not archive.is_file():
        raise NistDataError(f"{archive} is neither the EMNIST archive nor a data directory")
    written = []
    with zipfile.ZipFile(archive) as zf:
        # Only the flat file name is used: no path in the archive reaches the disk.
        members = {
            Path(m.filename).name: m
            for m in zf.infolist()
            if not m.is_dir() and Path(m.filename).name.startswith("emnist-")
        }
        kinds = set()
        for name, member in members.items():
            if not name.endswith("-mapping.txt") and any(s in name for s in splits):
                kinds.add(name.split("-")[1])
                with zf.open(member) as src:
                    chunks = iter(partial(src.read, 1 << 20), b"")
                    written.append(_write_atomically(data_dir / "emnist" / name, chunks))
        for kind in sorted(kinds):
            written.append(_copy_mapping(zf, members, kind, data_dir / "emnist"))
        for split, (first, last) in holdout.items():
            written += _cut_holdout(zf, members, split, first, last, data_dir / "emnist-holdout")
    return written


def _copy_mapping(
    zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], kind: str, target: Path
) -> Path:
    name = f"emnist-{kind}-mapping.txt"
    if name not in members:
        raise NistDataError(f"the archive has no {name}")
    return _write_atomically(target / name, [zf.read(members[name])])


def _cut_holdout(
    zf: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    split: str,
    first: int,
    last: int,
    target: Path,
) -> list[Path]:
    """emnist-{split}-{first}-{last}-*: images and labels first..last of an official split."""
    written = []
    for part in ("images-idx3", "labels-idx1"):
        source = f"emnist-{split}-{part}-ubyte.gz"
        if source not in members:
            raise NistDataError(f"the archive has no {source} to cut the holdout slice from")
        with zf.open(members[source]) as stream:
            content = _idx_slice(stream, first, last, source)
        name = f"emnist-{split}-{first}-{last}-{part}-ubyte.gz"
        written.append(_write_atomically(target / name, [content]))
    written.append(_copy_mapping(zf, members, split.split("-")[0], target))
    return written


def _idx_slice(stream: Any, first: int, last: int, name: str) -> bytes:
    """Items first..last (inclusive) of a gzipped IDX file, as a gzipped IDX file."""
    with gzip.GzipFile(fileobj=stream) as idx:
        magic = int.from_bytes(idx.read(4), "big")
        if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
            raise NistDataError(f"{name}: magic number {magic}, not an EMNIST IDX file")
        dims = np.frombuffer(idx.read(4 * (magic & 0xFF)), dtype=">u4").tolist()
        if not 0 <= first <= last < dims[0]:
            raise NistDataError(f"{name}: no items {first}..{last} in {dims[0]}")
        item_size = int(np.prod(dims[1:], dtype=np.int64))
        idx.seek(4 * (1 + len(dims)) + first * item_size)  # forward: reads and drops
        count = last - first + 1
        body = idx.read(count * item_size)
    if len(body) != count * item_size:
        raise NistDataError(f"{name}: ends before item {last}")
    header = np.array([magic, count, *dims[1:]], dtype=">u4").tobytes()
    return gzip.compress(header + body, compresslevel=6)
