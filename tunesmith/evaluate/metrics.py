"""Scores of one answer against its reference, 0 to 100, and the rule that picks them for a data set."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

from rouge_score import rouge_scorer

from tunesmith.evaluate.tool_metrics import TOOL_METRICS

Metric = Callable[[str, str], float]
"""(prediction, reference) -> score."""

SHORT_ANSWER_WORDS = 5
"""References of at most this many words (median) make a short-answer or label task."""
CHRF_ORDER = 6
CHRF_BETA = 2.0


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _rouge_metric(kind: str) -> Metric:
    return lambda prediction, reference: 100 * _rouge().score(reference, prediction)[kind].fmeasure


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (as SQuAD scores answers)."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if normalize(prediction) == normalize(reference) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall after normalising."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return 100.0 if pred == ref else 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 100 * 2 * precision * recall / (precision + recall)


def _char_ngrams(text: str, n: int) -> Counter[str]:
    chars = re.sub(r"\s+", "", text)
    return Counter(chars[i : i + n] for i in range(len(chars) - n + 1))


def chrf(prediction: str, reference: str) -> float:
    """chrF (character n-grams 1..6, beta 2, whitespace ignored), as sacrebleu computes it per sentence."""
    precisions, recalls = [], []
    for n in range(1, CHRF_ORDER + 1):
        pred, ref = _char_ngrams(prediction, n), _char_ngrams(reference, n)
        if not pred or not ref:
            continue
        common = sum((pred & ref).values())
        precisions.append(common / sum(pred.values()))
        recalls.append(common / sum(ref.values()))
    if not precisions:
        return 100.0 if prediction.strip() == reference.strip() else 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    beta2 = CHRF_BETA**2
    return 100 * (1 + beta2) * p * r / (beta2 * p + r)


def contains(prediction: str, reference: str) -> float:
    """100 when the answer contains the reference, or one of its |-separated forms ("seven|7"), after normalising."""
    answer = f" {normalize(prediction)} "
    forms = [normalize(form) for form in reference.split("|")]
    return 100.0 if any(form and f" {form} " in answer for form in forms) else 0.0


def length_ratio(prediction: str, reference: str) -> float:
    """Words in the answer per word of the reference, x100 (100: the same length)."""
    return 100 * len(prediction.split()) / max(1, len(reference.split()))


def repetition(prediction: str, reference: str) -> float:
    """Share of the answer's word 4-grams that repeat an earlier one (0: no loops)."""
    words = prediction.split()
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return 100 * (1 - len(set(grams)) / len(grams)) if grams else 0.0


def style_similarity(prediction: str, reference: str) -> float:
    """Cosine similarity of character 3-gram profiles: word choice, punctuation and layout, not meaning."""
    a, b = _char_ngrams(prediction.lower(), 3), _char_ngrams(reference.lower(), 3)
    dot = sum(a[k] * b[k] for k in a.keys() & b.keys())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return 100 * dot / norm if norm else 0.0


def corpus_style(predictions: Sequence[str], references: Sequence[str]) -> float:
    """style_similarity of all the answers together against all the references together: whether a model writes
    like the held-out text as a whole (its habits of words and punctuation), which one short answer against one
    short reference is too small a sample to show."""
    return style_similarity("\n".join(predictions), "\n".join(references))


METRICS: dict[str, Metric] = {
    "rouge1": _rouge_metric("rouge1"),
    "rouge2": _rouge_metric("rouge2"),
    "rougeL": _rouge_metric("rougeL"),
    "exact_match": exact_match,
    "token_f1": token_f1,
    "chrf": chrf,
    "contains": contains,
    "style": style_similarity,
    "length_ratio": length_ratio,
    "repetition": repetition,
    **TOOL_METRICS,
}
MODEL_METRICS = ("choice",)
"""Scored from the model's log-probabilities, not its answer: `choice.py` (question-answer data only)."""
HIGHER_IS_BETTER = {name: name not in ("length_ratio", "repetition") for name in (*METRICS, *MODEL_METRICS)}
DIAGNOSTICS = ("length_ratio", "repetition")
"""Reported for every task; not used to pick a winner."""


def choose_metrics(references: Sequence[str], kind: str) -> list[str]:
    """The metrics of a task, the first deciding who wins: labels and short answers, summaries, or style/text."""
    if kind == "text":
        return ["style", "chrf"]
    if kind == "tools":  # calls first; the answers' own words by chrF (a call's text is JSON, not prose)
        return [*TOOL_METRICS, "chrf"]
    words = sorted(len(r.split()) for r in references)
    if words and words[len(words) // 2] <= SHORT_ANSWER_WORDS:
        return ["exact_match", "token_f1", "chrf"]
    return ["rougeL", "rouge1", "rouge2", "chrf"]
