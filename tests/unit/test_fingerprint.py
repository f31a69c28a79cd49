"""Which side a sample lands on cannot be re-rolled by re-encoding it: every lossless
re-encoding of the testkit corpus's pictures (16-bit, alpha, a text chunk, WebP, BMP) decodes
to the very same pixels and lands where the picture did; JPEG at quality 95 moves at most 1%.
A fixed draw and a fixed key: the same verdict on every run."""

from functools import partial

import numpy as np
import pytest

from domain.samples import is_evaluation_sample
from testkit.corpus import make_corpus
from testkit.reencode import REENCODINGS, Flips, side_flips

KEYS = [b"k" * 32, b"another key"]


@pytest.fixture(scope="module")
def flips_by_key() -> list[Flips]:
    corpus = make_corpus("dev", 30)
    pictures = [data for kind in corpus.pictures.values() for data in kind]
    return side_flips(pictures, [partial(is_evaluation_sample, key=key) for key in KEYS])


@pytest.fixture(params=range(len(KEYS)), ids=["key-a", "key-b"])
def flips(request: pytest.FixtureRequest, flips_by_key: list[Flips]) -> Flips:
    return flips_by_key[request.param]


def test_lossless_re_encodings_decode_to_the_same_pixels_and_never_move(flips: Flips) -> None:
    for name, (_, lossless) in REENCODINGS.items():
        if lossless:
            assert flips.same_pixels[name] == flips.pictures, name
            assert flips.flipped[name] == 0, name


def test_jpeg_at_quality_95_moves_at_most_one_picture_in_a_hundred(flips: Flips) -> None:
    assert flips.flipped["JPEG q95"] <= 0.01 * flips.pictures, flips.flipped


def test_about_a_tenth_of_the_corpus_is_kept_for_evaluation(flips: Flips) -> None:
    assert 0.06 <= flips.evaluation / flips.pictures <= 0.14


def test_pictures_that_are_mostly_paper_do_not_all_share_one_side() -> None:
    # A small mark on a big page, each in another place: fingerprinted by its ink's box.
    sides = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        page = np.full((600, 800), 235, np.uint8)
        y, x = rng.integers(50, 500), rng.integers(50, 700)
        page[y : y + rng.integers(8, 30), x : x + rng.integers(3, 20)] = rng.integers(0, 60)
        sides.append(is_evaluation_sample(page, KEYS[0]))
    assert 5 <= sum(sides) <= 40
