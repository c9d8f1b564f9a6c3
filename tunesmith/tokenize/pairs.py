"""Preference pairs -> two examples each: the prompt with the chosen answer and with the rejected one.

Both are rendered by the model's own chat template exactly as supervised fine-tuning renders a conversation, and
only the final answer (with its end-of-turn token) is marked: it is what the preference losses sum log-probs over.

In a batch a pair is one row: the prompt once, then the chosen answer, then the rejected one, with position ids
that restart the rejected answer where the chosen one began and an attention mask under which each answer sees
the prompt and itself only. Every token then has the context it has in its own conversation, and the prompt
(often a third of a pair's tokens) is run once instead of twice, with no padding between the two sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import PreferencePair
from tunesmith.tokenize.encode import IGNORE, Example, encode

PAIR_WIDTH_STEP = 8
"""Pair batches are padded to a multiple of this many tokens. Rows of a pair batch are long (prompt and two
answers), so a coarse step pads a lot: on the brand-voice pairs 64 (batches.WIDTH_STEP) pads 19%, 8 pads 4%; the
supervised batches' growing step (batches.padded_width: 16 to 64 beyond 128 tokens) would pad these long rows more."""


@dataclass(frozen=True, slots=True)
class PairExample:
    """One preference pair as the model sees it."""

    line: int
    """The input line it came from."""
    chosen: Example
    """The prompt and the preferred answer; the answer's tokens are labelled."""
    rejected: Example
    """The prompt and the rejected answer; the answer's tokens are labelled."""
    shared: int
    """Leading tokens the two sides have in common before either's first labelled token: the prompt."""

    @property
    def length(self) -> int:
        """Tokens of the pair's row in a batch: the prompt once and both answers."""
        return len(self.chosen.input_ids) + len(self.rejected.input_ids) - self.shared


@dataclass(frozen=True)
class PairBatch:
    """Pairs as rows of [prompt, chosen answer, rejected answer], right-padded."""

    input_ids: torch.Tensor
    """[rows, width] int64."""
    position_ids: torch.Tensor
    """[rows, width] int64: both answers continue from the end of the prompt."""
    allowed: torch.Tensor
    """[rows, 1, width, width] bool, True where a query may attend to a key (causal, and never across answers)."""
    sources: torch.Tensor
    """[tokens] int64: for each labelled answer token, the flat index (row * width + position) of the state that
    predicts it (the prompt's last token predicts both answers' first tokens)."""
    targets: torch.Tensor
    """[tokens] int64: the labelled tokens."""
    sides: torch.Tensor
    """[tokens] int64: 2 * row for a chosen token, 2 * row + 1 for a rejected one."""

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])


def _shared_prefix(chosen: Example, rejected: Example) -> int:
    n = min(len(chosen.input_ids), len(rejected.input_ids))
    same = chosen.input_ids[:n] == rejected.input_ids[:n]
    common = n if same.all() else int(np.argmin(same))
    first = [int(np.argmax(e.labels != IGNORE)) for e in (chosen, rejected)]
    return min(common, *first)


def _side(example: Example, shared: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the row of the states predicting the side's labelled tokens, those tokens); the side's own
    tokens sit at row positions start.. for token positions shared.."""
    at = np.nonzero(example.labels[shared:] != IGNORE)[0]
    states = np.where(at == 0, shared - 1, start + at - 1)
    keep = states >= 0  # a label on a row's very first token has nothing to predict it, as in a plain row
    return states[keep], example.labels[shared:][at][keep]


def collate_pairs(pairs: list[PairExample], pad_id: int) -> PairBatch:
    """One row per pair, the width rounded up to a multiple of PAIR_WIDTH_STEP."""
    width = -(-max(p.length for p in pairs) // PAIR_WIDTH_STEP) * PAIR_WIDTH_STEP
    ids = np.full((len(pairs), width), pad_id, dtype=np.int64)
    positions = np.zeros((len(pairs), width), dtype=np.int64)
    segment = np.full((len(pairs), width), -1, dtype=np.int64)  # 0 prompt, 1 chosen, 2 rejected, -1 padding
    sources, targets, sides = [], [], []
    for row, pair in enumerate(pairs):
        s, c, r = pair.shared, pair.chosen.input_ids, pair.rejected.input_ids
        ids[row, : pair.length] = np.concatenate([c, r[s:]])
        positions[row, : pair.length] = np.concatenate([np.arange(len(c)), np.arange(s, len(r))])
        segment[row, : pair.length] = np.repeat([0, 1, 2], [s, len(c) - s, len(r) - s])
        for side, (example, start) in enumerate(((pair.chosen, s), (pair.rejected, len(c)))):
            states, tokens = _side(example, s, start)
            sources.append(row * width + states)
            targets.append(tokens)
            sides.append(np.full(len(tokens), 2 * row + side))
    seg = torch.from_numpy(segment)
    query, key = seg[:, :, None], seg[:, None, :]
    allowed = ((key == 0) | (key == query)) & (key >= 0) & torch.ones(width, width, dtype=torch.bool).tril()
    allowed |= torch.eye(width, dtype=torch.bool)  # padding sees itself: no empty softmax row, no NaN to backprop
    return PairBatch(
        torch.from_numpy(ids),
        torch.from_numpy(positions),
        allowed[:, None],
        torch.from_numpy(np.concatenate(sources)),
        torch.from_numpy(np.concatenate(targets).astype(np.int64)),
        torch.from_numpy(np.concatenate(sides)),
    )


@dataclass
class EncodedPairs:
    """The pairs of a data set, and those left out."""

    pairs: list[PairExample] = field(default_factory=list)
    """Pairs to train on, in input order."""
    dropped: list[tuple[int, int]] = field(default_factory=list)
    """(line, length of the longer side): no whole answer fits in max_length on one side or both."""


def encode_pairs(
    records: list[tuple[int, PreferencePair]], tokenizer: PreTrainedTokenizerBase, *, max_length: int
) -> EncodedPairs:
    """Tokenise each pair's two conversations; a pair whose either side cannot keep its answer is left out."""
    sides = []
    for pick in ("chosen", "rejected"):
        rows = [(line, pair.conversation(pick)) for line, pair in records]
        encoded = encode(rows, tokenizer, max_length=max_length, supervise="last")
        sides.append(({e.line: e for e in encoded.examples}, encoded.full_lengths))
    (chosen, chosen_lengths), (rejected, rejected_lengths) = sides
    out = EncodedPairs()
    for line, _ in records:
        if line in chosen and line in rejected:
            shared = _shared_prefix(chosen[line], rejected[line])
            out.pairs.append(PairExample(line, chosen[line], rejected[line], shared))
        else:
            out.dropped.append((line, max(chosen_lengths.get(line, 0), rejected_lengths.get(line, 0))))
    return out
