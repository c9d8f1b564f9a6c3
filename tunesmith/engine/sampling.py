"""How one token is chosen from a row's logits, and its log-probabilities: the one sampling function every caller
shares, so that the same prompt, settings and seed give the same answer from every entry point."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SEED_SPACE = 2**64
"""torch.Generator takes seeds in [0, 2**64): a request's seed (plus its answer's index) is taken modulo this."""


@dataclass(frozen=True)
class Sampling:
    """How one request chooses its tokens."""

    max_tokens: int = 256
    """The longest answer, in tokens (the end-of-turn token not counted)."""
    temperature: float = 0.0
    """0 is greedy (the same answer every time); higher is more varied."""
    top_p: float = 1.0
    """Sample only from the smallest set of tokens whose probability reaches top_p."""
    seed: int | None = None
    """Makes sampling repeatable: answer i of a request draws from a generator seeded with seed + i. None draws
    from torch's global generator."""
    logprobs: int | None = None
    """None: no log-probs; K: each answer token's log-prob and the K likeliest tokens' (0-20)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One answer token's log-probability under the model (before temperature), and the likeliest alternatives."""

    token: int
    """The token id chosen."""
    logprob: float
    """Its log-probability."""
    top: tuple[tuple[int, float], ...]
    """(token id, log-probability) of the likeliest tokens, most likely first."""


def row_generator(seed: int | None, index: int) -> torch.Generator | None:
    """The random generator of answer `index` of a request with this seed (None: the global one)."""
    if seed is None:
        return None
    return torch.Generator().manual_seed((seed + index) % SEED_SPACE)


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token from one row's logits (vocabulary,)."""
    if sampling.temperature == 0:
        return int(logits.argmax())
    # Shifted so that the likeliest token is at 0, and the temperature kept a normal float32: a tiny temperature
    # then sends the others to -inf (greedy, as its limit is), never to inf - inf or 0 / 0.
    shifted = logits.float() - logits.float().max()
    temperature = max(sampling.temperature, torch.finfo(torch.float32).tiny)
    probs = torch.softmax(shifted / temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprob(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """The chosen token's log-probability and the `top` likeliest tokens'."""
    log_probs = logits.float().log_softmax(-1)
    values, ids = log_probs.topk(top)
    return TokenLogprob(token, float(log_probs[token]), tuple(zip(ids.tolist(), values.tolist(), strict=True)))
