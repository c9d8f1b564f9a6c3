"""Generate with a base model or a run's result, under the chat template it was trained with.

Prompts are batched with left padding and a KV cache; every sequence stops at the end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from threading import Thread

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from tunesmith.data.schema import Message
from tunesmith.models.load import load_for_inference
from tunesmith.tokenize.render import ChatRenderer


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen."""

    max_new_tokens: int = 256
    """The longest answer."""
    temperature: float = 0.0
    """0 is greedy (the same answer every time); higher is more varied."""
    top_p: float = 1.0
    """Sample only from the smallest set of tokens whose probability reaches top_p."""


@dataclass(frozen=True)
class Answer:
    """One generated answer."""

    text: str
    """The answer, special tokens removed."""
    stopped: bool
    """It ended with the end-of-turn token (not cut off by max_new_tokens)."""
    tokens: int
    """Tokens generated, the end token included."""


@dataclass(frozen=True)
class Generator:
    """A model ready to answer conversations."""

    model: PreTrainedModel
    """The model (a PeftModel for adapter runs), in eval mode."""
    tokenizer: PreTrainedTokenizerBase
    """Its tokenizer and chat template."""
    renderer: ChatRenderer
    """Renders prompts as in training."""
    stop_ids: list[int]
    """End-of-turn and eos token ids."""

    def _inputs(self, texts: Sequence[str], raw: bool = False) -> dict[str, torch.Tensor]:
        """Left-padded ids (see load_generator); chat prompts already hold their special tokens, raw text gets the
        tokenizer's own."""
        batch = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=raw)
        return {k: v.to(self.model.device) for k, v in batch.items()}

    def _options(self, sampling: Sampling) -> dict[str, object]:
        sample = sampling.temperature > 0
        return {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": sample,
            "temperature": sampling.temperature if sample else None,
            "top_p": sampling.top_p if sample else None,
            "top_k": None,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
        }

    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        sampling: Sampling,
        batch_size: int = 8,
        limits: Sequence[int] | None = None,
    ) -> list[Answer]:
        """One answer per conversation, in batches of similar prompt length (left padding, KV cache).

        `limits` caps each answer on its own (at most sampling.max_new_tokens); conversations with similar caps
        are batched together, so that a batch stops at its own longest cap.
        """
        texts = [self.renderer.prompt(tuple(c)) for c in conversations]
        return self._in_batches(texts, sampling, batch_size, False, limits)

    def complete(self, texts: Sequence[str], sampling: Sampling, batch_size: int = 8) -> list[Answer]:
        """Continue plain texts (no chat template), as a model trained on documents would."""
        return self._in_batches(texts, sampling, batch_size, True, None)

    def _in_batches(
        self, texts: Sequence[str], sampling: Sampling, batch_size: int, raw: bool, limits: Sequence[int] | None
    ) -> list[Answer]:
        caps = [min(c, sampling.max_new_tokens) for c in limits] if limits else [sampling.max_new_tokens] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: (caps[i], len(texts[i])))
        answers: dict[int, Answer] = {}
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            longest = replace(sampling, max_new_tokens=max(caps[i] for i in chosen))
            rows = self._batch([texts[i] for i in chosen], longest, raw)
            answers.update((i, self._answer(row, caps[i])) for i, row in zip(chosen, rows))
        return [answers[i] for i in range(len(texts))]

    def _batch(self, texts: Sequence[str], sampling: Sampling, raw: bool) -> list[list[int]]:
        """The new token ids of each row."""
        inputs = self._inputs(texts, raw)
        # several rows: a preallocated cache saves concatenating every layer's keys and values at every step
        cache = {"cache_implementation": "static"} if len(texts) > 1 else {}
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self._options(sampling), **cache)
        return out[:, inputs["input_ids"].shape[1] :].tolist()  # type: ignore[no-any-return]

    def _answer(self, ids: list[int], cap: int) -> Answer:
        stops = [at for at, token in enumerate(ids[:cap]) if token in self.stop_ids]
        kept = ids[: stops[0] + 1] if stops else ids[:cap]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        return Answer(text, bool(stops), len(kept))

    def stream(self, conversation: Sequence[Message], sampling: Sampling) -> Iterator[str]:
        """The answer to one conversation, piece by piece as it is generated."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self._inputs([self.renderer.prompt(tuple(conversation))])
        thread = Thread(target=_generate_into, args=(self.model, inputs, self._options(sampling), streamer))
        thread.start()
        yield from streamer
        thread.join()


def _generate_into(
    model: PreTrainedModel, inputs: dict[str, torch.Tensor], options: dict[str, object], streamer: object
) -> None:
    with torch.inference_mode():
        model.generate(**inputs, **options, streamer=streamer)


def load_generator(name: str, *, device: str = "auto", dtype: str = "auto", base: bool = False) -> Generator:
    """A model by name (short name, hub id, folder, .gguf) or a run; base=True takes a run's base model."""
    model, tokenizer = load_for_inference(name, device=device, dtype=dtype, base=base)
    tokenizer.padding_side = "left"  # a generator's own tokenizer: prompts end where the answers start
    renderer = ChatRenderer(tokenizer)
    return Generator(model, tokenizer, renderer, renderer.stop_token_ids())
