"""Token F1 and BLEU-1 on known values (SQuAD's F1; Papineni et al.'s unigram BLEU example)."""

from __future__ import annotations

import math

import pytest

from mark_eval.locomo.metrics import bleu1, lexical_scores, token_f1, tokens


def test_tokens_lowercase_strip_punctuation_and_optionally_articles() -> None:
    assert tokens("The Cat, sat!") == ["the", "cat", "sat"]
    assert tokens("The Cat, sat!", drop_articles=True) == ["cat", "sat"]


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("the cat sat on the mat", "the cat is on the mat", 0.75),  # cat on mat shared: P = R = 3/4
        ("Paris", "paris.", 1.0),
        ("in Paris, France", "Paris", 2 * (1 / 3) * 1 / (1 / 3 + 1)),  # P 1/3, R 1 -> 0.5
        ("a dog", "the cat", 0.0),
        ("", "anything", 0.0),
        ("dance dance studio", "dance studio studio", 2 / 3),  # multiset overlap: dance 1, studio 1 -> P = R = 2/3
    ],
)
def test_token_f1_known_values(prediction: str, gold: str, expected: float) -> None:
    assert token_f1(prediction, gold) == pytest.approx(expected)


def test_bleu1_clips_repeated_words_papineni_example() -> None:
    # "the" appears 2 times in the reference, 7 in the candidate: modified unigram precision 2/7, no penalty (7 > 6)
    assert bleu1("the the the the the the the", "the cat is on the mat") == pytest.approx(2 / 7)


def test_bleu1_brevity_penalty() -> None:
    # perfect precision, 2 tokens against 6: BP = exp(1 - 6/2)
    assert bleu1("the cat", "the cat is on the mat") == pytest.approx(math.exp(-2))
    assert bleu1("the cat is on the mat", "The cat is on the mat.") == pytest.approx(1.0)
    assert bleu1("dog", "the cat") == 0.0


def test_lexical_scores_rounds_both() -> None:
    scores = lexical_scores("7 May 2023", "May 7, 2023")
    assert scores == {"f1": 1.0, "bleu1": 1.0}
