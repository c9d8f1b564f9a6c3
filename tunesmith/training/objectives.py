"""What a step learns: the supervised loss on examples, or a preference loss on pairs.

An objective turns one optimizer step's micro-batches into a backward pass and the step's numbers, and measures
the held-out set. The loop does the rest (clip, step, report, evaluate, save) the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import torch

from tunesmith.config import PreferenceSettings
from tunesmith.tokenize.batches import collate
from tunesmith.tokenize.encode import Example
from tunesmith.tokenize.pairs import PairExample, collate_pairs
from tunesmith.training.loss import mean_loss, supervised_loss
from tunesmith.training.preference import dpo_loss, sequence_log_probs, simpo_loss

Autocast = Callable[[], AbstractContextManager[object]]


@dataclass
class StepResult:
    """One optimizer step's numbers."""

    loss: float
    """Mean loss of the step (per supervised token, or per pair)."""
    tokens: int
    """Real tokens that went through the model."""
    supervised: int
    """Tokens learned (sft) or pairs (dpo): what the loss is averaged over."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Objective-specific numbers for metrics.jsonl (rewards of preference pairs)."""


class Objective(Protocol):
    def backward(self, model: torch.nn.Module, items: list[list[int]]) -> StepResult:
        """Forward and backward of one step's micro-batches (indexes into the training items)."""
        ...

    def evaluate(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        """eval_loss (and more) on the held-out items, in eval mode without gradients; None without any."""
        ...

    def evaluate_start(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        """`evaluate` before the first step."""
        ...


@dataclass(frozen=True)
class Supervised:
    """Cross-entropy on the learned tokens, averaged over every learned token of the step."""

    train: Sequence[Example]
    held_out: Sequence[Example]
    pad_id: int
    max_length: int
    autocast: Autocast
    compiled: bool

    def backward(self, model: torch.nn.Module, items: list[list[int]]) -> StepResult:
        batches = [collate([self.train[i] for i in indices], self.pad_id, self.max_length) for indices in items]
        supervised = max(1, sum(b.supervised for b in batches))
        loss_sum = 0.0
        for batch in batches:
            with self.autocast():
                loss, _ = supervised_loss(model, batch, compiled=self.compiled)
            (loss / supervised).backward()
            loss_sum += loss.item()
        return StepResult(loss_sum / supervised, sum(b.real_tokens for b in batches), supervised)

    def evaluate(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        loss = mean_loss(model, self.held_out, batches, self.pad_id, self.autocast)
        return None if loss is None else {"eval_loss": loss}

    def evaluate_start(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        return self.evaluate(model, batches)


@dataclass
class PairSums:
    """Summed numbers of a set of pairs, turned into means for metrics.jsonl."""

    loss: float = 0.0
    correct: float = 0.0
    margin: float = 0.0
    chosen: float = 0.0
    rejected: float = 0.0
    pairs: int = 0

    def add(self, loss: torch.Tensor, margin: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        self.loss += float(loss.sum())
        self.correct += float((margin > 0).sum())
        self.margin += float(margin.sum())
        self.chosen += float(chosen.sum())
        self.rejected += float(rejected.sum())
        self.pairs += int(loss.numel())

    def means(self, prefix: str = "") -> dict[str, float]:
        n = max(1, self.pairs)
        return {
            f"{prefix}reward_accuracy": self.correct / n,
            f"{prefix}reward_margin": self.margin / n,
            f"{prefix}chosen_logps": self.chosen / n,
            f"{prefix}rejected_logps": self.rejected / n,
        }


def reference_log_probs(
    model: torch.nn.Module,
    pairs: Sequence[PairExample],
    batches: Sequence[Sequence[int]],
    pad_id: int,
    autocast: Autocast,
) -> torch.Tensor:
    """[pairs, 2] summed answer log-probs (chosen, rejected) of the model as it is, in eval mode: before the first
    step, the reference that DPO measures the policy against."""
    out = torch.zeros(len(pairs), 2, dtype=torch.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for indices in batches:
            with autocast():
                sums, _ = sequence_log_probs(model, collate_pairs([pairs[i] for i in indices], pad_id))
            out[list(indices)] = sums.float().reshape(-1, 2).cpu()
    model.train(was_training)
    return out


@dataclass(frozen=True)
class Preference:
    """DPO or SimPO on pairs, each pair one row of its micro-batch (`collate_pairs`); averaged over the step's pairs."""

    train: Sequence[PairExample]
    held_out: Sequence[PairExample]
    settings: PreferenceSettings
    reference: tuple[torch.Tensor, torch.Tensor]
    """[pairs, 2] reference log-probs of the training and the held-out pairs (unused by simpo)."""
    pad_id: int
    autocast: Autocast

    def _losses(self, model: torch.nn.Module, pairs: list[PairExample], ref: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(loss, margin, chosen log-probs, rejected log-probs) per pair."""
        batch = collate_pairs(pairs, self.pad_id)
        with self.autocast():
            sums, counts = sequence_log_probs(model, batch)
        chosen, rejected = sums[0::2], sums[1::2]
        loss, margin = self._pair_losses(chosen, rejected, ref.to(sums.device, sums.dtype), counts)
        return loss, margin, chosen.detach(), rejected.detach()

    def _pair_losses(
        self, chosen: torch.Tensor, rejected: torch.Tensor, ref: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, margin) per pair from the summed log-probs; counts: answer tokens, chosen and rejected interleaved."""
        beta = self.settings.resolved_beta()
        if self.settings.loss == "dpo":
            loss, margin = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], beta)
        else:
            loss, margin = simpo_loss(chosen, rejected, counts[0::2], counts[1::2], beta, self.settings.simpo_margin)
        if self.settings.sft_weight:
            loss = loss - self.settings.sft_weight * chosen / counts[0::2]
        return loss, margin

    def backward(self, model: torch.nn.Module, items: list[list[int]]) -> StepResult:
        pairs = max(1, sum(len(indices) for indices in items))
        sums, tokens = PairSums(), 0
        for indices in items:
            chosen = [self.train[i] for i in indices]
            loss, margin, chosen_lp, rejected_lp = self._losses(model, chosen, self.reference[0][indices])
            (loss.sum() / pairs).backward()
            sums.add(loss.detach(), margin.detach(), chosen_lp, rejected_lp)
            tokens += sum(p.length for p in chosen)
        return StepResult(sums.loss / pairs, tokens, pairs, sums.means())

    def evaluate(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        if not self.held_out:
            return None
        sums = PairSums()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for indices in batches:
                pairs = [self.held_out[i] for i in indices]
                sums.add(*self._losses(model, pairs, self.reference[1][list(indices)]))
        model.train(was_training)
        return {"eval_loss": sums.loss / max(1, sums.pairs), **sums.means("eval_")}

    def evaluate_start(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        """With DPO the policy is still the reference before its first step (a new adapter is zero; a full run starts
        from the reference weights), so the held-out numbers follow from the stored reference log-probs, measured
        in the same batches: no pass over the held-out pairs."""
        if self.settings.loss != "dpo" or not self.held_out:
            return self.evaluate(model, batches)
        ref = self.reference[1]
        counts = torch.tensor([n for p in self.held_out for n in (p.chosen.supervised, p.rejected.supervised)])
        loss, margin = self._pair_losses(ref[:, 0], ref[:, 1], ref, counts)
        sums = PairSums()
        sums.add(loss, margin, ref[:, 0], ref[:, 1])
        return {"eval_loss": sums.loss / sums.pairs, **sums.means("eval_")}
