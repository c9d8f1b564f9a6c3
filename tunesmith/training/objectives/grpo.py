"""grpo: reinforcement from graded answers (group-relative policy optimisation). Each step samples
`group_size` answers to each of its prompts with the one generation engine (the policy as it is, batched, KV
cache), grades them all (`rewards.py`, concurrently), turns the rewards into advantages within each group and
learns the clipped, KL-penalised objective of `training/grpo.py` on the answer tokens.

The data is OpenAI's reinforcement format: one line each, `messages` (the prompt; a last assistant message is not
part of it) plus any fields the graders read as {{item.*}}. The answers are drawn with a seed taken from torch's
generator, which checkpoints keep: a resumed run samples, grades and learns exactly what the whole run would."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import ReinforcementSettings, RunConfig
from tunesmith.data.graded import read_graded
from tunesmith.engine.core import Engine, Request
from tunesmith.engine.sampling import Sampling
from tunesmith.errors import ConfigError, DataError
from tunesmith.tokenize.render import ChatRenderer, without_empty_thinking
from tunesmith.training.data import PromptItem, RunData
from tunesmith.training.grpo import answer_log_probs, answer_rows, group_advantages, grpo_token_losses
from tunesmith.training.objectives.base import Autocast, Backward, Kind, Setup, StepResult
from tunesmith.training.plan import held_out_split
from tunesmith.training.rewards import Rewards, Scored

SEED_RANGE = 2**62


def read_prompt_items(source: str, tokenizer: PreTrainedTokenizerBase, config: RunConfig) -> list[PromptItem]:
    """Every prompt of a reinforcement data file, rendered as the model's chat template writes it."""
    renderer = ChatRenderer(tokenizer)
    room = config.max_length - config.reinforcement.max_answer_tokens
    items = []
    for graded in read_graded(source)[0]:
        ids = renderer.prompt_ids(graded.messages, tools=graded.tools)
        if len(ids) > room:
            raise DataError(
                f"{source}:{graded.line}: the prompt is {len(ids)} tokens, more than max_length less "
                f"max_answer_tokens ({room})",
                hint="raise max_length, lower reinforcement.max_answer_tokens, or shorten the prompt",
            )
        items.append(PromptItem(graded.line, ids, graded.value))
    return items


def load_prompts(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> RunData:
    """The prompts and the held-out ones (the eval data, or 10% of the training prompts)."""
    if len(config.data) != 1:
        raise ConfigError("objective grpo trains on one data source", hint="merge the prompt files into one")
    source = config.source
    prompts = read_prompt_items(source, tokenizer, config)
    report: dict[str, object] = {"train": {"source": source, "examples": len(prompts), "format": "reinforcement"}}
    if config.eval_data:
        held_out = read_prompt_items(config.eval_data, tokenizer, config)
        report["eval"] = {"source": config.eval_data, "examples": len(held_out), "format": "reinforcement"}
        return RunData(tokenizer, list(prompts), list(held_out), report)
    chosen = set(held_out_split(len(prompts), config.seed).tolist())
    report["held_out"] = {"source": source, "lines": [p.line for i, p in enumerate(prompts) if i in chosen]}
    held = [p for i, p in enumerate(prompts) if i in chosen]
    return RunData(tokenizer, [p for i, p in enumerate(prompts) if i not in chosen], list(held), report)


@dataclass(frozen=True)
class Sampled:
    """The answers of a set of prompts: `group` answers each, prompt after prompt."""

    ids: list[list[int]]
    """Each answer's tokens (with the stop token when it stopped: it is learned too)."""
    texts: list[str]
    """Each answer's text, as graders read it."""


@dataclass
class GRPO:
    """The step: sample, grade, learn."""

    train: Sequence[PromptItem]
    held_out: Sequence[PromptItem]
    settings: ReinforcementSettings
    rewards: Rewards
    tokenizer: PreTrainedTokenizerBase
    stop_ids: list[int]
    pad_id: int
    autocast: Autocast
    batch_tokens: int
    reference: torch.nn.Module | None
    """A frozen copy of the model for full fine-tuning; None: the adapter switched off is the reference."""
    backward_loss: Backward = torch.Tensor.backward

    def sample(self, model: torch.nn.Module, prompts: Sequence[PromptItem], n: int, seed: int | None) -> Sampled:
        """n answers to each prompt (greedy when seed is None), generated together in eval mode."""
        temperature = self.settings.temperature if seed is not None else 0.0
        engine = Engine(model, self.pad_id, max_batch=max(1, min(64, len(prompts) * n)))
        requests = []
        for k, prompt in enumerate(prompts):
            sampling = Sampling(
                self.settings.max_answer_tokens,
                temperature,
                self.settings.top_p,
                seed=None if seed is None else seed + k * n,
            )
            requests.append(Request(list(prompt.prompt_ids), sampling, frozenset(self.stop_ids), n=n))
            engine.add(requests[-1])
        was_training = model.training
        model.eval()
        with torch.inference_mode(), self.autocast():
            engine.run()
        model.train(was_training)
        ids, texts = [], []
        for request in requests:
            for answer in request.answers:
                if answer.error is not None:
                    raise answer.error
                ids.append(list(answer.ids) + ([self.stop_ids[0]] if answer.finish == "stop" else []))
                texts.append(
                    without_empty_thinking(self.tokenizer.decode(answer.ids, skip_special_tokens=True)).strip()
                )
        return Sampled(ids, texts)

    def backward(self, model: torch.nn.Module, items: list[list[int]]) -> StepResult:
        prompts = [self.train[i] for batch in items for i in batch]
        group = self.settings.group_size
        started = time.perf_counter()
        sampled = self.sample(model, prompts, group, int(torch.randint(0, SEED_RANGE, (1,))))
        sampling_seconds = time.perf_counter() - started
        scored = self.rewards.score(sampled.texts, [p.item for p in prompts for _ in range(group)])
        grouped = scored.rewards.reshape(len(prompts), group)
        advantages = group_advantages(grouped).reshape(-1)
        answer_tokens = sum(len(ids) for ids in sampled.ids)
        sums = {"loss": 0.0, "kl": 0.0, "clipped": 0.0}
        tokens = 0
        for rows in self._chunks(prompts, sampled):
            loss, kl, clipped, seen = self._chunk_loss(model, prompts, sampled, advantages, rows)
            self.backward_loss(loss / answer_tokens)
            sums["loss"] += float(loss.detach())
            sums["kl"] += float(kl)
            sums["clipped"] += float(clipped)
            tokens += seen
        return StepResult(
            sums["loss"] / answer_tokens,
            tokens,
            answer_tokens,
            self._metrics(scored, grouped, sums, answer_tokens, len(sampled.ids), sampling_seconds),
        )

    def _chunks(self, prompts: Sequence[PromptItem], sampled: Sampled) -> Iterator[list[int]]:
        """Answer indexes in forward passes of at most batch_tokens (padding included), at least one answer each."""
        group, chunk, longest = self.settings.group_size, [], 0
        for index, ids in enumerate(sampled.ids):
            length = len(prompts[index // group].prompt_ids) + len(ids)
            if chunk and max(longest, length) * (len(chunk) + 1) > self.batch_tokens:
                yield chunk
                chunk, longest = [], 0
            chunk.append(index)
            longest = max(longest, length)
        if chunk:
            yield chunk

    def _chunk_loss(
        self,
        model: torch.nn.Module,
        prompts: Sequence[PromptItem],
        sampled: Sampled,
        advantages: torch.Tensor,
        indexes: list[int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(summed token loss, summed KL, clipped tokens, tokens through the model) of some answers."""
        group = self.settings.group_size
        rows = answer_rows(
            [list(prompts[i // group].prompt_ids) for i in indexes], [sampled.ids[i] for i in indexes], self.pad_id
        )
        temperature = self.settings.temperature
        with self.autocast():
            logp = answer_log_probs(model, rows, temperature).float()
        ref = None
        if self.settings.beta > 0:
            with torch.no_grad(), self.autocast(), self._reference_of(model) as reference:
                ref = answer_log_probs(reference, rows, temperature).float()
        token_advantages = advantages[torch.tensor(indexes)][rows.owner].to(logp.device, logp.dtype)
        losses, kl, clipped = grpo_token_losses(
            logp, logp.detach(), ref, token_advantages, self.settings.epsilon, self.settings.beta
        )
        return losses.sum(), kl.sum(), clipped.sum(), int(rows.attention.sum())

    @contextmanager
    def _reference_of(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        if self.reference is not None:
            yield self.reference
            return
        with model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext():
            yield model

    def _metrics(
        self,
        scored: Scored,
        grouped: torch.Tensor,
        sums: dict[str, float],
        answer_tokens: int,
        answers: int,
        sampling_seconds: float,
    ) -> dict[str, float]:
        values = {
            "reward": float(grouped.mean()),
            "reward_std": float(grouped.std(dim=1, correction=1).mean()),
            "kl": sums["kl"] / answer_tokens,
            "clip_ratio": sums["clipped"] / answer_tokens,
            "answer_length": answer_tokens / answers,
            "answers": float(answers),
            "sampling_seconds": sampling_seconds,
            "grader_errors": float(scored.errors),
        }
        return values | {f"reward/{name}": score for name, score in scored.by_grader.items()}

    def evaluate(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        """The held-out prompts answered greedily and graded: eval_reward, and eval_loss = -eval_reward (so the
        best checkpoint, and early stopping, follow the grade)."""
        if not self.held_out:
            return None
        prompts = list(self.held_out[: self.settings.eval_samples])
        sampled = self.sample(model, prompts, 1, None)
        scored = self.rewards.score(sampled.texts, [p.item for p in prompts])
        reward = float(scored.rewards.mean())
        named = {f"eval_reward/{name}": score for name, score in scored.by_grader.items()}
        return {"eval_loss": -reward, "eval_reward": reward, **named}

    def evaluate_start(self, model: torch.nn.Module, batches: Sequence[Sequence[int]]) -> dict[str, float] | None:
        return self.evaluate(model, batches)


def build_grpo(setup: Setup) -> GRPO:
    settings = setup.reinforcement
    rewards = Rewards(settings.graders, settings.concurrency)
    renderer = ChatRenderer(setup.data.tokenizer)
    reference = None
    if setup.full_weights and settings.beta > 0:
        reference = copy.deepcopy(setup.model).eval().requires_grad_(False)
    return GRPO(
        setup.data.train,  # type: ignore[arg-type]
        setup.data.held_out,  # type: ignore[arg-type]
        settings,
        rewards,
        setup.data.tokenizer,
        renderer.stop_token_ids(),
        setup.data.pad_id,
        setup.autocast,
        setup.batch_tokens,
        reference,
        setup.backward,
    )


GRPO_KIND = Kind("grpo", load_prompts, build_grpo)
"""Prompts and graders: the model learns from its own graded answers."""
