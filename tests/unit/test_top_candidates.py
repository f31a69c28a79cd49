"""domain.predictor: the top candidates of one picture, and narrowing them to a field's labels."""

import numpy as np

from core.labels import LabelSet
from domain.predictor import restrict, top_candidates

LABELS = LabelSet("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")


def test_a_sure_answer_still_has_five_candidates_even_where_the_rest_underflowed() -> None:
    probabilities = np.zeros(len(LABELS), np.float32)
    probabilities[LABELS.characters.index("7")] = 1.0  # float32 softmax: the rest rounds to 0
    top = top_candidates(probabilities, LABELS.characters)
    assert len(top) == 5 and top[0].label == "7" and top[0].probability == 1.0


def test_narrowed_to_digits_every_candidate_is_a_digit_and_they_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(len(LABELS)), size=3).astype(np.float32)
    probabilities[0, LABELS.characters.index("O")] = 5.0  # a round mark: O far ahead of 0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    narrowed = restrict(probabilities, LABELS, "0123456789")
    np.testing.assert_allclose(narrowed.sum(axis=1), 1.0, rtol=1e-5)
    for row, original in zip(narrowed, probabilities, strict=True):
        top = top_candidates(row, LABELS.characters, allowed="0123456789")
        assert len(top) == 5 and all(c.label.isdigit() for c in top)
        # The order among the digits is the model's own.
        digits = [LABELS.characters.index(d) for d in "0123456789"]
        best_digit = LABELS.characters[max(digits, key=lambda i: original[i])]
        assert top[0].label == best_digit
    assert top_candidates(narrowed[0], LABELS.characters, k=3, allowed="01")[2:] == []
