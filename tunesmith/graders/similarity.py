"""text_similarity's metrics, each a score in [0, 1], computed by the libraries OpenAI's graders name: rapidfuzz
(fuzzy_match), NLTK (bleu, gleu, meteor), rouge-score (rouge_1 .. rouge_5, rouge_l). cosine needs an embeddings
endpoint and is computed in `judge.py`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from nltk.translate.gleu_score import sentence_gleu
from nltk.translate.meteor_score import meteor_score
from rapidfuzz import fuzz
from rouge_score import rouge_scorer

ROUGE = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_3": "rouge3", "rouge_4": "rouge4", "rouge_5": "rouge5"}
ROUGE["rouge_l"] = "rougeL"


class _NoSynonyms:
    """WordNet's place when its data is not installed: METEOR then matches exact words and stems only."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


@lru_cache(maxsize=1)
def _wordnet() -> Any:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return _NoSynonyms()
    from nltk.corpus import wordnet

    return wordnet


@lru_cache(maxsize=8)
def _rouge(kind: str) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def similarity(metric: str, text: str, reference: str) -> float:
    """The score of `text` against `reference` in [0, 1]."""
    if metric == "fuzzy_match":
        return fuzz.WRatio(text, reference) / 100.0
    if metric in ROUGE:
        return float(_rouge(ROUGE[metric]).score(reference, text)[ROUGE[metric]].fmeasure)
    hypothesis, references = text.split(), [reference.split()]
    if not hypothesis or not references[0]:  # the n-gram metrics divide by the words of each side
        return 1.0 if hypothesis == references[0] else 0.0
    if metric == "bleu":
        return float(sentence_bleu(references, hypothesis, smoothing_function=SmoothingFunction().method1))
    if metric == "gleu":
        return float(sentence_gleu(references, hypothesis))
    if metric == "meteor":
        return float(meteor_score(references, hypothesis, wordnet=_wordnet()))
    raise ValueError(f"unknown evaluation_metric {metric!r}")
