"""Metrics on pairs whose scores were worked out by hand."""

from __future__ import annotations

import math

import pytest

from tunesmith.evaluate.metrics import (
    METRICS,
    choose_metrics,
    chrf,
    contains,
    corpus_style,
    exact_match,
    repetition,
    style_similarity,
    token_f1,
)


def test_rouge_on_a_known_pair():
    # 6 words each, 5 shared unigrams (the, cat, on, the, mat), 3 of 5 bigrams, LCS 5
    pred, ref = "the cat was on the mat", "the cat sat on the mat"
    assert METRICS["rouge1"](pred, ref) == pytest.approx(100 * 5 / 6)
    assert METRICS["rouge2"](pred, ref) == pytest.approx(60.0)
    assert METRICS["rougeL"](pred, ref) == pytest.approx(100 * 5 / 6)


def test_exact_match_and_token_f1_normalise_like_squad():
    assert exact_match("The Cat!", "cat") == 100.0
    assert exact_match("a dog", "cat") == 0.0
    # pred {cat, sat} vs ref {cat, sat, down}: precision 1, recall 2/3, F1 0.8
    assert token_f1("The cat sat.", "cat sat down") == pytest.approx(80.0)
    assert token_f1("", "") == 100.0 and token_f1("x", "") == 0.0


def test_chrf_on_a_known_pair():
    assert chrf("abc", "abc") == pytest.approx(100.0)
    # orders 1 and 2 only (no 3-gram in "ab"): P = (1 + 1) / 2, R = (2/3 + 1/2) / 2 = 7/12
    # F-beta(2) = 5 * P * R / (4 * P + R) = 35/55
    assert chrf("ab", "abc") == pytest.approx(100 * 35 / 55)
    assert chrf("a b", "ab") == pytest.approx(100.0)  # whitespace is ignored


def test_contains_takes_alternatives_and_whole_words():
    assert contains("There are 7 days in a week.", "seven|7") == 100.0
    assert contains("Paris is the capital.", "Paris") == 100.0
    assert contains("Parisian food", "Paris") == 0.0


def test_repetition_and_length_ratio():
    assert repetition("a b c d a b c d", "") == pytest.approx(20.0)  # 5 word 4-grams, 4 distinct
    assert repetition("one two three", "") == 0.0
    assert METRICS["length_ratio"]("one two", "one two three four") == pytest.approx(50.0)


def test_metrics_follow_the_task():
    assert choose_metrics(["positive", "negative", "neutral"], "chat")[0] == "exact_match"
    long = ["Customer: Ana, account 1. Issue: a bill twice the usual. Cause: estimated reading."] * 3
    assert choose_metrics(long, "chat")[0] == "rougeL"
    assert choose_metrics([], "text")[0] == "style"


def test_style_compares_character_trigram_profiles_and_corpus_style_pools_the_answers():
    assert style_similarity("abcabc", "abcabc") == pytest.approx(100)
    # "abc" has the trigram abc once; "abcab" has abc, bca, cab: cosine 1 / sqrt(3)
    assert style_similarity("abc", "abcab") == pytest.approx(100 / math.sqrt(3))
    assert style_similarity("xyz", "abc") == 0
    answers, references = ["To lie.", "A fool."], ["A fool.", "To lie."]
    assert corpus_style(answers, references) == pytest.approx(style_similarity("To lie.\nA fool.", "A fool.\nTo lie."))
    assert corpus_style(answers, references) > max(map(style_similarity, answers, references))


def test_distractors_are_other_answers_drawn_alike_for_every_model():
    from tunesmith.data.schema import Message
    from tunesmith.evaluate.choice import CHOICES, distractors
    from tunesmith.evaluate.items import Item

    answers = ["red", "blue", "red", "green", "yellow", "blue", "black"]
    items = [Item(n, (Message("user", f"q{n}"),), a) for n, a in enumerate(answers)]
    drawn = distractors(items)
    assert drawn == distractors(items)  # the same choices for the base model and the tuned one
    for item, picked in zip(items, drawn):
        texts = [items[j].reference for j in picked]
        assert len(picked) == CHOICES - 1 and item.reference not in texts and len(set(texts)) == len(texts)
    few = distractors(items[:3])  # red, blue, red: one other answer to choose from
    assert [[items[j].reference for j in picked] for picked in few] == [["blue"], ["red"], ["blue"]]
