"""dpo (and simpo): preference pairs, each pair one row of its micro-batch (`collate_pairs`: the prompt once, then
both answers); the loss pushes the chosen answer's log-probability above the rejected one's, against a reference
(the model before its first step) for dpo, reference-free and length-normalised for simpo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save
from transformers import PreTrainedTokenizerBase

from tunesmith import paths
from tunesmith.config import PreferenceSettings, RunConfig
from tunesmith.data.schema import PreferencePair
from tunesmith.data.validate import RecordReader
from tunesmith.errors import ConfigError
from tunesmith.tokenize.batches import ordered_batches
from tunesmith.tokenize.pairs import PairExample, collate_pairs, encode_pairs
from tunesmith.training import distributed
from tunesmith.training.data import Item, RunData, check_sources, item_lengths, prepare_source
from tunesmith.training.loss import causal_lm
from tunesmith.training.objectives.base import Autocast, Backward, Kind, Setup, StepResult
from tunesmith.training.plan import held_out_split
from tunesmith.training.preference import dpo_loss, sequence_log_probs, simpo_loss


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

    def reduce(self) -> None:
        """Summed over every rank of the run."""
        fields = ("loss", "correct", "margin", "chosen", "rejected", "pairs")
        summed = distributed.total([getattr(self, name) for name in fields])
        for name, value in zip(fields, summed, strict=True):
            setattr(self, name, int(value) if name == "pairs" else value)

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
    backward_loss: Backward = torch.Tensor.backward

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
        pairs = max(1, int(distributed.total([sum(len(indices) for indices in items)])[0]))  # over every rank
        sums, tokens = PairSums(), 0
        for indices in distributed.micro_batches(causal_lm(model), items):
            chosen = [self.train[i] for i in indices]
            loss, margin, chosen_lp, rejected_lp = self._losses(model, chosen, self.reference[0][indices])
            self.backward_loss(loss.sum() / pairs)
            sums.add(loss.detach(), margin.detach(), chosen_lp, rejected_lp)
            tokens += sum(p.length for p in chosen)
        sums.reduce()
        return StepResult(sums.loss / pairs, int(distributed.total([tokens])[0]), pairs, sums.means())

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


def _read_pairs(source: str, config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> list[PairExample]:
    records = [r for chunk in RecordReader(source, format=config.format).chunks() for r in chunk]
    if not all(isinstance(r, PreferencePair) for _, r in records):
        raise ConfigError(
            f"{source}: objective dpo needs preference pairs ({{prompt, chosen, rejected}} or OpenAI's "
            f"{{input, preferred_output, non_preferred_output}})",
            hint="give a preference file, or train on the answers with --objective sft",
        )
    return encode_pairs(records, tokenizer, max_length=config.max_length).pairs  # type: ignore[arg-type]


def load_pairs(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> RunData:
    """Preference pairs, and the held-out ones (the eval data, or 10% of the training pairs)."""
    check_sources(config, mixes=False)
    report = prepare_source(config, tokenizer, config.data[0], config.eval_data, answers=False).report.as_dict()
    pairs = _read_pairs(config.source, config, tokenizer)
    if config.eval_data:
        return RunData(tokenizer, list(pairs), list(_read_pairs(config.eval_data, config, tokenizer)), report)
    chosen = set(held_out_split(len(pairs), config.seed).tolist())
    report["held_out"] = {"source": config.source, "lines": [p.line for i, p in enumerate(pairs) if i in chosen]}
    held_out: list[Item] = [p for i, p in enumerate(pairs) if i in chosen]
    return RunData(tokenizer, [p for i, p in enumerate(pairs) if i not in chosen], held_out, report)


def _reference(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    """dpo's reference log-probs of the training and held-out pairs: computed once with the model before its first
    step (an adapter is still zero, so this is the base model: no second copy of the weights), kept in the run
    folder, read back on resume."""
    path, data = setup.run.reference, setup.data
    if path.is_file():
        stored = load_file(str(path))
        return stored["train"], stored["held_out"]
    train_batches = ordered_batches(item_lengths(data.train), setup.batch_tokens)
    tensors = {}
    # held out: the batches every evaluation uses, so that step 0 shows no margin
    for name, pairs, batches in (("train", data.train, train_batches), ("held_out", data.held_out, setup.eval_batches)):
        tensors[name] = reference_log_probs(setup.model, pairs, batches, data.pad_id, setup.autocast)  # type: ignore[arg-type]
    with paths.atomic_file(path) as handle:
        handle.write(save(tensors))
    return tensors["train"], tensors["held_out"]


def build_preference(setup: Setup) -> Preference:
    data = setup.data
    if setup.preference.loss == "dpo":
        reference = _reference(setup)
    else:  # simpo needs no reference
        reference = (torch.zeros(len(data.train), 2), torch.zeros(len(data.held_out), 2))
    return Preference(
        data.train, data.held_out, setup.preference, reference, data.pad_id, setup.autocast, setup.backward
    )


DPO = Kind("dpo", load_pairs, build_preference)
"""Preference pairs, with the loss `preference.loss` names (dpo or simpo)."""
