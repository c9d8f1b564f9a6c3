"""sft and text: cross-entropy on the learned tokens (an answer's, or every token of a document), averaged over
every learned token of the step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from tunesmith.tokenize.batches import collate
from tunesmith.tokenize.encode import Example
from tunesmith.training import distributed
from tunesmith.training.data import load_examples
from tunesmith.training.loss import causal_lm, mean_loss, supervised_loss
from tunesmith.training.objectives.base import Autocast, Backward, Kind, Setup, StepResult


@dataclass(frozen=True)
class Supervised:
    """Cross-entropy on the learned tokens (soft targets where an example carries a teacher's top-k)."""

    train: Sequence[Example]
    held_out: Sequence[Example]
    pad_id: int
    max_length: int
    autocast: Autocast
    compiled: bool
    backward_loss: Backward = torch.Tensor.backward

    def backward(self, model: torch.nn.Module, items: list[list[int]]) -> StepResult:
        batches = [collate([self.train[i] for i in indices], self.pad_id, self.max_length) for indices in items]
        # the step's learned tokens over every rank: each rank's loss is a share of the one mean
        supervised = max(1, int(distributed.total([sum(b.supervised for b in batches)])[0]))
        loss_sum = 0.0
        soft = any(b.top_ids is not None for b in batches)  # a teacher's targets: no single right token
        lm = causal_lm(model)
        device = lm.get_output_embeddings().weight.device
        correct = None if soft else torch.zeros((), dtype=torch.long, device=device)
        for batch in distributed.micro_batches(lm, batches):
            with self.autocast():
                loss, _ = supervised_loss(model, batch, compiled=self.compiled, correct=correct)
            self.backward_loss(loss / supervised)
            loss_sum += loss.item()
        hits = 0 if correct is None else correct.item()
        loss_sum, hits, tokens = distributed.total([loss_sum, hits, sum(b.real_tokens for b in batches)])
        metrics = {} if correct is None else {"token_accuracy": hits / supervised}
        return StepResult(loss_sum / supervised, int(tokens), supervised, metrics)

    def evaluate(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        measured = mean_loss(model, self.held_out, batches, self.pad_id, self.autocast)
        return None if measured is None else {"eval_loss": measured[0], "eval_token_accuracy": measured[1]}

    def evaluate_start(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        return self.evaluate(model, batches)


def build_supervised(setup: Setup) -> Supervised:
    data = setup.data
    return Supervised(
        data.train, data.held_out, data.pad_id, setup.max_length, setup.autocast, setup.compiled, setup.backward
    )


SFT = Kind("sft", partial(load_examples, mixes=True, answers=True), build_supervised, mixes=True)
"""Conversations: the assistant turns and the token that ends each are learned, never the prompt."""
TEXT = Kind("text", partial(load_examples, mixes=True, answers=False), build_supervised, mixes=True)
"""Plain text (continued pre-training): every token of every window is learned."""
