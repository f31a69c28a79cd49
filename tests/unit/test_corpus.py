"""Every kind of real picture is read about as well as a clean NIST image (testkit/corpus.py).

The corpus draws the same 200 writer-disjoint NIST characters as each kind of picture, with
fixed seeds, and reads them as the API does (decode, preprocess, the bundled model). The floors
are shares of the clean accuracy well under what bench/bench_corpus.py measures (see
docs/BENCHMARKS.md), so a real loss fails and chance does not: a kind's share moves by about
2-3 points between draws of 200 characters.
"""

import io
import math

import numpy as np
import pytest
from PIL import Image

from core.config import get_settings
from testkit.corpus import (
    BALANCED_HOLDOUT,
    KINDS,
    Corpus,
    correct_by_kind,
    load_characters,
    make_corpus,
    read_pictures_naively,
)

COUNT = 200

# Share of the clean accuracy each kind must keep. The preprocessing before issue 12 read
# thick marker (71%), low resolution (80%), sensor noise (82%) and squared paper (93%) under
# these floors.
FLOORS = {
    "clean, redrawn with a uniform pen": 0.88,
    "low-res, bilinear": 0.83,
    "low-res, nearest": 0.84,
    "blur": 0.90,
    "thick marker": 0.86,
    "thin pen": 0.86,
    "ruled paper": 0.90,
    "squared paper": 0.87,
    "coloured ink, tinted paper": 0.90,
    "shadows and gradients": 0.86,
    "JPEG quality 20": 0.92,
    "sensor noise": 0.90,
    "rotation": 0.92,
    "small on a big page": 0.92,
    "inverted": 0.92,
    "transparent PNG": 0.92,
    "canvas drawing": 0.88,
    # Issue 27's kinds (dev draw, 200 characters: 93%, 45%, 93% and 63% of clean before the
    # preprocessing found the paper and the character's box where ink touches the edges or
    # marks lie around, and the model learnt from rendered pictures; 97%, 76%, 99% and 99%
    # after).
    "tight crop": 0.92,
    "tight crop, low-res": 0.68,
    "touching a form's box": 0.90,
    "among smaller marks": 0.92,
}


def _require_nist() -> None:
    path = get_settings().nist_data_dir / BALANCED_HOLDOUT
    if not path.exists():
        pytest.skip(f"NIST data not found at {path}")


@pytest.fixture(scope="module")
def dev_corpus() -> Corpus:
    _require_nist()
    return make_corpus("dev", COUNT)


@pytest.fixture(scope="module")
def correct(dev_corpus: Corpus) -> dict[str, np.ndarray]:
    return correct_by_kind(dev_corpus)


@pytest.fixture(scope="module")
def accuracy(correct: dict[str, np.ndarray]) -> dict[str, float]:
    return {kind: float(right.mean()) for kind, right in correct.items()}


@pytest.fixture(scope="module")
def floor_correct(dev_corpus: Corpus) -> dict[str, np.ndarray]:
    return correct_by_kind(dev_corpus, reader=read_pictures_naively)


def worse_by_chance(floor_only: int, service_only: int) -> float:
    """One-sided sign test on the pictures the two read differently: the chance that the
    floor alone reads `floor_only` or more of them if neither were better."""
    total = floor_only + service_only
    return sum(math.comb(total, k) for k in range(floor_only, total + 1)) / 2**total


def test_every_kind_has_a_floor() -> None:
    assert set(FLOORS) == set(KINDS) - {"clean"}


def test_clean_pictures_are_read_as_well_as_the_model_reads_nist(
    accuracy: dict[str, float],
) -> None:
    # The bundled model reads 88.5% of the whole balanced holdout slice.
    assert accuracy["clean"] >= 0.8


@pytest.mark.parametrize("kind", list(FLOORS))
def test_kind_keeps_its_share_of_the_clean_accuracy(accuracy: dict[str, float], kind: str) -> None:
    share = accuracy[kind] / accuracy["clean"]
    assert share >= FLOORS[kind], f"{kind}: {share:.1%} of clean, floor {FLOORS[kind]:.0%}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_service_reads_every_kind_at_least_as_well_as_a_plain_crop_and_scale(
    correct: dict[str, np.ndarray], floor_correct: dict[str, np.ndarray], kind: str
) -> None:
    # The same decoded pictures and the same model: only the preprocessing differs. Paired:
    # on the pictures that one reads and the other does not, the floor must not win more often
    # than chance allows (5%, one-sided); a point or two either way on 200 is the draw's noise.
    floor_only = int((floor_correct[kind] & ~correct[kind]).sum())
    service_only = int((correct[kind] & ~floor_correct[kind]).sum())
    chance = worse_by_chance(floor_only, service_only)
    assert chance >= 0.05, (
        f"{kind}: crop-and-scale alone reads {floor_only} pictures, the service alone "
        f"{service_only} (chance {chance:.3f})"
    )


def test_pictures_are_encoded_files_of_their_kind(dev_corpus: Corpus) -> None:
    opened = {kind: Image.open(io.BytesIO(files[0])) for kind, files in dev_corpus.pictures.items()}
    assert opened["clean"].format == "PNG" and opened["clean"].size == (28, 28)
    canvas = opened["canvas drawing"]
    assert (canvas.format, canvas.mode, canvas.size) == ("PNG", "RGBA", (280, 280))
    assert canvas.getchannel("A").getextrema() == (255, 255)  # the board is opaque
    transparent = opened["transparent PNG"]
    assert transparent.mode == "RGBA" and transparent.getchannel("A").getextrema()[0] == 0
    assert opened["JPEG quality 20"].format == "JPEG"
    assert opened["coloured ink, tinted paper"].mode == "RGB"
    page = opened["small on a big page"]
    assert min(page.size) >= 400 and page.format == "JPEG"
    assert max(opened["thin pen"].size) >= 500


def test_the_check_draw_is_other_characters_and_other_pictures() -> None:
    _require_nist()
    dev, _ = load_characters("dev", 50)
    check, _ = load_characters("check", 50)
    dev_set = {image.tobytes() for image in dev}
    assert not any(image.tobytes() in dev_set for image in check)
    a, b = make_corpus("dev", 3, ["ruled paper"]), make_corpus("check", 3, ["ruled paper"])
    sizes = {Image.open(io.BytesIO(data)).size for data in a.pictures["ruled paper"]}
    assert sizes != {Image.open(io.BytesIO(data)).size for data in b.pictures["ruled paper"]}


def test_a_subset_of_kinds_draws_the_same_pictures() -> None:
    _require_nist()
    full = make_corpus("dev", 4, ["clean", "blur", "canvas drawing"])
    one = make_corpus("dev", 4, ["canvas drawing"])
    assert one.pictures["canvas drawing"] == full.pictures["canvas drawing"]
    assert np.array_equal(one.labels, full.labels)
