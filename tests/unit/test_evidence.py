"""Evidence from neighbours (domain/evidence.py) with the bundled model and its neighbour index,
on real NIST characters: a wrong label that contradicts the examples around it is held, an
honest upload is not, nor a new style far from every example. Fixed draws: the same verdict on
every run."""

import numpy as np
import onnxruntime as ort
import pytest

from core.config import EMNIST_BALANCED_LABELS, get_settings
from core.neighbours import NEIGHBOURS_FILE, NeighbourIndex
from core.preprocessing import nist_to_model_input
from domain.evidence import evidence_rules, weigh
from domain.registry import BUNDLED_MODEL_DIR
from testkit.nist import balanced_holdout, training_characters
from testkit.styles import in_style

LABELS = EMNIST_BALANCED_LABELS


@pytest.fixture(scope="module")
def index() -> NeighbourIndex:
    return NeighbourIndex.from_bytes((BUNDLED_MODEL_DIR / NEIGHBOURS_FILE).read_bytes())


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(BUNDLED_MODEL_DIR / "model.onnx"))


def held(index: NeighbourIndex, session: ort.InferenceSession, glyphs, labels) -> float:
    """The share of these uploads (NIST-like glyphs) the evidence holds as suspect."""
    _, embeddings = session.run(
        ["probabilities", "embedding"], {"image": nist_to_model_input(glyphs)}
    )
    rules = evidence_rules(get_settings())
    return float(
        np.mean(
            [
                weigh(index, e, label, rules).contradicts
                for e, label in zip(embeddings, labels, strict=True)
            ]
        )
    )


def test_the_index_has_every_class_and_survives_storage(index: NeighbourIndex) -> None:
    assert index.labels == LABELS
    assert set(index.classes.tolist()) == set(range(len(LABELS)))
    assert all(len(r) >= 50 for r in index.reference)
    again = NeighbourIndex.from_bytes(index.to_bytes())
    assert np.allclose(again.vectors, index.vectors) and again.k == index.k
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-2)
    assert index.depth(1, 2.0) == 1.0 and index.depth(1, -1.0) == 0.0


def test_writers_it_never_saw_with_their_own_labels_are_rarely_held(index, session) -> None:
    glyphs, labels = balanced_holdout(2000)
    assert held(index, session, glyphs, labels) <= 0.02


def test_ones_labelled_seven_are_held_and_ones_labelled_one_are_not(index, session) -> None:
    ones, _ = training_characters(200, 0, "1")
    assert held(index, session, ones, ["7"] * 200) >= 0.4
    assert held(index, session, ones, ["1"] * 200) <= 0.02


@pytest.mark.parametrize("style", ["rotated", "outlined"])
def test_a_new_style_with_its_right_labels_is_rarely_held(index, session, style: str) -> None:
    glyphs, labels = [], []
    for character in "0123456789":
        images, found = training_characters(20, 0, character)
        glyphs.append(in_style(style, images))
        labels += found
    assert held(index, session, np.concatenate(glyphs), labels) <= 0.05
