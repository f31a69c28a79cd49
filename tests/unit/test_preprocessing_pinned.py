"""core.preprocessing's outputs, pinned: the bundled model was trained on exactly what it makes,
so a change made for speed or clarity must not move one bit of it.

The test reads a fixed draw of real pictures (one character of the corpus's `dev` and `check`
draws as every kind of picture, the bench's canvas, 28x28 PNG and photo, rows for `ink_map`)
and compares the sha256 of each float32 output with the one the code made when it was pinned.
The hashes hold for the pinned numpy/OpenCV builds on an x86-64 CPU with OpenBLAS's AVX2
kernels, which the test asks for (PINNED_KERNEL): left to choose by the CPU, OpenBLAS takes its
AVX-512 kernels on a CPU that has them, and they round the resampling's matrix products in the
last bit differently (45 of the 51 outputs moved on an Intel Xeon with AVX-512). Another BLAS or
OpenCV may round differently too (then re-pin only after checking the change is theirs).

The broader check, before and after a change, compares every output with a git revision's
code picture by picture (hundreds per kind; run it before committing a change to the module):

    NIST_DATA_DIR=... .venv/bin/python -m tests.unit.test_preprocessing_pinned --against REV
    ... --pin   # prints the hashes of this file's draw, made by the current code
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bench.common import load_revision
from core import preprocessing
from core.config import get_settings
from core.images import decode_image
from core.segmentation import ROW_SIDE
from testkit.corpus import BALANCED_HOLDOUT, make_corpus

# Made by core/preprocessing.py at 9621c45; 16 re-pinned when light became uneven only where it
# survives a closing over three quarters of the picture, 10 when faint ink came to join a
# character's pieces (the starter model re-bundled each time).
PINNED = {
    "dev/clean/0": "8c45101465a9d190",
    "dev/clean, redrawn with a uniform pen/0": "07ccacd3a8e5a02b",
    "dev/low-res, bilinear/0": "499553bec79e39a8",
    "dev/low-res, nearest/0": "a93474d364dcf2ae",
    "dev/blur/0": "acbebeeb6f4653d6",
    "dev/thick marker/0": "54dec50fdce0c5c0",
    "dev/thin pen/0": "7a1a8fa2290288ce",
    "dev/ruled paper/0": "66414755242b2fa2",
    "dev/squared paper/0": "79fa7695984e4b43",
    "dev/coloured ink, tinted paper/0": "ba7da6931bec2b46",
    "dev/shadows and gradients/0": "01dafc8485c2cf39",
    "dev/JPEG quality 20/0": "f4e66756379d42b1",
    "dev/sensor noise/0": "40401f905544957e",
    "dev/rotation/0": "688dfd1ff191f782",
    "dev/small on a big page/0": "3c72c69cbf73b29c",
    "dev/inverted/0": "dda68c312784f856",
    "dev/transparent PNG/0": "a70f8c3ab0b81873",
    "dev/canvas drawing/0": "d80c0d9218839819",
    "dev/tight crop/0": "0304040b4b3e3ac2",
    "dev/tight crop, low-res/0": "3954c8a28cb9d822",
    "dev/touching a form's box/0": "4ef551e1f3152b9d",
    "dev/among smaller marks/0": "9615c8b9ce5fd25c",
    "check/clean/0": "5c310c2b4dc60c41",
    "check/clean, redrawn with a uniform pen/0": "0ac9ee9ea5d1900b",
    "check/low-res, bilinear/0": "aca33f243791f65b",
    "check/low-res, nearest/0": "3876acf4dfc6467e",
    "check/blur/0": "dabb244c7a112732",
    "check/thick marker/0": "4d9ab1963244e300",
    "check/thin pen/0": "202ff3a032b16af0",
    "check/ruled paper/0": "4c862399f7ea38d0",
    "check/squared paper/0": "ee3262e1418638ab",
    "check/coloured ink, tinted paper/0": "62ad8522b4b24eef",
    "check/shadows and gradients/0": "0cdaf8b18ac82522",
    "check/JPEG quality 20/0": "0de217713ca419ef",
    "check/sensor noise/0": "3aaa3adbe02b73fa",
    "check/rotation/0": "5e5d53d7784af1f0",
    "check/small on a big page/0": "57faf1ee16e6cd75",
    "check/inverted/0": "2fdf516e8f60aa00",
    "check/transparent PNG/0": "2666d60f8ad227a5",
    "check/canvas drawing/0": "c8b6b20b1fd4ba24",
    "check/tight crop/0": "987a6db0c5869569",
    "check/tight crop, low-res/0": "e590895200ad3190",
    "check/touching a form's box/0": "cc9a6b6d63cded18",
    "check/among smaller marks/0": "07fb82aa6461f41a",
    "small png/0": "c1b0c31d2be6f908",
    "canvas png/0": "94bc415f7afbc03e",
    "photo jpeg": "d4b54ae965e45ed9",
    "row canvas/0": "df6917b41718b32e",
    "row photo/0": "942bbcaed8ffef6f",
    "row form/0": "faf441677eba8dd0",
    "batch": "4ed36185fed1264c",
}

# OpenBLAS's kernels for CPUs with AVX2 (x86-64 since 2013), read by numpy when it loads: the
# outputs are made in a child process that asks for them, whatever CPU runs the test.
PINNED_KERNEL = {"OPENBLAS_CORETYPE": "Haswell"}

Picture = tuple[str, str, np.ndarray]  # (name, what is run on it: "glyph" or "row", pixels)


def decoded(data: bytes) -> np.ndarray:
    """Decoded as the API decodes an upload, under limits of its own: a test run's settings
    (the integration tests' small upload limit) must not refuse the bench's photo."""
    return decode_image(data, max_bytes=len(data), max_pixels=100_000_000).image


def pictures(count: int = 1) -> Iterator[Picture]:
    """The corpus's first `count` characters of both draws as every kind, the bench's three
    pictures, and rows of every kind: decoded as the API decodes them."""
    from testkit.images import canvas_png, photo_jpeg, small_png
    from testkit.nist import nist_glyphs
    from testkit.rows import KINDS, make_rows

    for split in ("dev", "check"):
        corpus = make_corpus(split, count)
        for kind, files in corpus.pictures.items():
            for i, data in enumerate(files):
                yield f"{split}/{kind}/{i}", "glyph", decoded(data)
    glyphs, _ = nist_glyphs(count)
    for i, glyph in enumerate(glyphs):
        yield f"small png/{i}", "glyph", decoded(small_png(glyph))
        yield f"canvas png/{i}", "glyph", decoded(canvas_png(glyph))
    yield "photo jpeg", "glyph", decoded(photo_jpeg(1200, 1600))
    for seed in range(3 if count > 1 else 0):  # the bench's 12 MP photos: slow to make
        yield f"12 MP photo jpeg/{seed}", "glyph", decoded(photo_jpeg(seed=seed))
    for kind in KINDS:
        for i, row in enumerate(make_rows(count, kind=kind, touching=kind == "photo", seed=3)):
            yield f"row {kind}/{i}", "row", preprocessing.grayscale(row.image, ROW_SIDE)
    if count > 1:
        yield from odd_pictures(glyphs[:count])


def odd_pictures(glyphs: np.ndarray) -> Iterator[Picture]:
    """What the corpus does not send: 16-bit and float pixels, pictures of odd shapes (a pixel,
    a line 1 px wide, sizes around the thumbnail's), noise, flat grey."""
    from testkit.images import canvas_png

    for i, glyph in enumerate(glyphs):
        canvas = decoded(canvas_png(glyph))
        for name, pixels in (("small", glyph), ("canvas", canvas)):
            yield f"{name} 16-bit/{i}", "glyph", pixels.astype(np.uint16) * 257
            yield f"{name} float/{i}", "glyph", pixels.astype(np.float32) / 255
    rng = np.random.default_rng(5)
    shapes = [(1, 1), (1, 50), (50, 1), (2, 2), (3, 7), (56, 56), (64, 64), (97, 300), (700, 20)]
    for shape in shapes:
        for i in range(20):
            noise = rng.integers(0, 256, shape, dtype=np.uint8)
            dots = np.where(rng.random(shape) < 0.05, 0, 255).astype(np.uint8)
            yield f"noise {shape}/{i}", "glyph", noise
            yield f"dots {shape}/{i}", "glyph", dots
            yield f"dots {shape} row/{i}", "row", dots
    yield "flat grey", "glyph", np.full((40, 40), 128, np.uint8)


Output = np.ndarray | str | None  # str: the exception it raised (a crash must stay one)


def outputs(module: ModuleType, drawn: list[Picture]) -> dict[str, Output]:
    """What `module` makes of each picture, and of all the glyphs' pictures as one batch."""
    made: dict[str, Output] = {}
    for name, use, pixels in drawn:
        run: Callable = module.preprocess_image if use == "glyph" else module.ink_map
        try:
            made[name] = run(pixels)
        except Exception as error:  # a crash is an output too
            made[name] = type(error).__name__
    glyphs = (p for name, use, p in drawn if use == "glyph" and not isinstance(made[name], str))
    made["batch"] = module.preprocess_batch(glyphs)
    return made


def digest(output: Output) -> str:
    if output is None or isinstance(output, str):
        return f"{output}".lower()
    return hashlib.sha256(np.ascontiguousarray(output, np.float32).tobytes()).hexdigest()[:16]


def pinned_digests() -> dict[str, str]:
    """The digests of this file's draw as the current code makes them, with PINNED_KERNEL."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.test_preprocessing_pinned", "--digests"],
        env={**os.environ, **PINNED_KERNEL},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout)


def test_every_pinned_output_is_reproduced_bit_for_bit() -> None:
    if not (get_settings().nist_data_dir / BALANCED_HOLDOUT).exists():
        pytest.skip("NIST data not found")
    made = pinned_digests()
    assert made.keys() == PINNED.keys()
    changed = [name for name in PINNED if made[name] != PINNED[name]]
    assert not changed, f"{len(changed)} of {len(PINNED)} outputs changed: {changed}"


# --- Against a revision: python -m tests.unit.test_preprocessing_pinned --against REV -------


def same(a: Output, b: Output) -> tuple[bool, bool]:
    """(equal as arrays, equal byte for byte: the same signs of zero too)."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        alike = type(a) is type(b) and a == b  # two crashes, compared by what they said
        return alike, alike
    return bool(np.array_equal(a, b) and a.dtype == b.dtype), digest(a) == digest(b)


def compare(revision: str, count: int) -> int:
    with tempfile.TemporaryDirectory(prefix="hwr-pinned-") as folder:
        before = load_revision(revision, Path(folder))[1]
        drawn = list(pictures(count))
        old, new = outputs(before, drawn), outputs(preprocessing, drawn)
    groups: dict[str, list[int]] = {}
    for name in old:
        group = name.rsplit("/", 1)[0] if "/" in name else name
        equal, identical = same(old[name], new[name])
        tally = groups.setdefault(group, [0, 0, 0])
        tally[0] += 1
        tally[1] += equal
        tally[2] += identical
        if not identical:
            print(f"DIFFERS: {name}", file=sys.stderr)
    for group, (total, equal, identical) in groups.items():
        print(f"{group:55s} {total:5d} outputs, {equal:5d} equal, {identical:5d} byte-identical")
    total = sum(t[0] for t in groups.values())
    identical = sum(t[2] for t in groups.values())
    kinds = Counter(digest(o) for o in new.values() if not isinstance(o, np.ndarray))
    print(f"all: {total} outputs, {identical} byte-identical; not arrays, in the new: {kinds}")
    return 0 if identical == total else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="REV", help="compare with this revision's code")
    parser.add_argument("--count", type=int, default=100, help="characters per kind and draw")
    parser.add_argument("--pin", action="store_true", help="print this file's PINNED")
    parser.add_argument("--digests", action="store_true", help=argparse.SUPPRESS)  # the test's
    args = parser.parse_args(argv)
    if args.digests:  # in the test's child process, under PINNED_KERNEL
        made = outputs(preprocessing, list(pictures()))
        print(json.dumps({name: digest(output) for name, output in made.items()}))
        return 0
    if args.pin:
        print("PINNED = {")
        for name, value in pinned_digests().items():
            print(f"    {name!r}: {value!r},")
        print("}")
        return 0
    return compare(args.against or "HEAD", args.count)


if __name__ == "__main__":
    sys.exit(main())
