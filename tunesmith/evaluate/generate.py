"""Answer conversations with a base model or a run's result, under the chat template it was trained with.

The text side of generation: prompts rendered and tokenised here (special-token strings typed in messages stay
text), answers decoded here; the tokens come from the one engine (`tunesmith.engine`) the server uses too, so in
float32 the same prompt, settings and seed give the same answer in `eval`, `compare`, `generate`, `chat` and the API
(bf16 rounds differently with the batch's shape).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.data.schema import Message, Tool
from tunesmith.engine.core import Engine, Request, generate
from tunesmith.engine.sampling import Sampling
from tunesmith.engine.text import TextStream
from tunesmith.models.load import load_for_inference
from tunesmith.tokenize.render import ChatRenderer, without_empty_thinking


@dataclass(frozen=True)
class Answer:
    """One generated answer."""

    text: str
    """The answer, special tokens removed."""
    stopped: bool
    """It ended with the end-of-turn token (not cut off by max_tokens)."""
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

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.stop_ids[0])

    def chat_prompt(self, conversation: Sequence[Message], tools: tuple[Tool, ...] = ()) -> list[int]:
        """A conversation's prompt ids (with the functions it may call), up to where the answer starts."""
        return self.renderer.prompt_ids(tuple(conversation), tools=tools)

    def text_prompt(self, text: str) -> list[int]:
        """Plain text to continue, with the tokenizer's own leading tokens (e.g. bos)."""
        return list(self.tokenizer(text)["input_ids"])

    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        sampling: Sampling,
        batch_size: int = 8,
        limits: Sequence[int] | None = None,
        tools: Sequence[tuple[Tool, ...]] | None = None,
    ) -> list[Answer]:
        """One answer per conversation, `batch_size` rows at a time; `limits` caps each answer on its own (at most
        sampling.max_tokens); `tools`: the functions each conversation offers."""
        offered = tools if tools is not None else [()] * len(conversations)
        prompts = [self.chat_prompt(c, t) for c, t in zip(conversations, offered, strict=True)]
        return self._answers(prompts, sampling, batch_size, limits)

    def complete(self, texts: Sequence[str], sampling: Sampling, batch_size: int = 8) -> list[Answer]:
        """Continue plain texts (no chat template), as a model trained on documents would."""
        return self._answers([self.text_prompt(t) for t in texts], sampling, batch_size, None)

    def _answers(
        self, prompts: list[list[int]], sampling: Sampling, batch_size: int, limits: Sequence[int] | None
    ) -> list[Answer]:
        caps = [min(c, sampling.max_tokens) for c in limits] if limits else [sampling.max_tokens] * len(prompts)
        samplings = [replace(sampling, max_tokens=cap) for cap in caps]
        made = generate(
            self.model, prompts, samplings, pad_id=self.pad_id, stop_ids=self.stop_ids, max_batch=batch_size
        )
        return [
            Answer(
                without_empty_thinking(self.tokenizer.decode(a.ids, skip_special_tokens=True)).strip(),
                a.finish == "stop",
                len(a.ids) + (a.finish == "stop"),
            )
            for a in made
        ]

    def stream(self, conversation: Sequence[Message], sampling: Sampling) -> Iterator[str]:
        """The answer to one conversation, piece by piece as it is generated."""
        engine = Engine(self.model, self.pad_id, max_batch=1)
        request = Request(self.chat_prompt(conversation), sampling, frozenset(self.stop_ids))
        engine.add(request)
        (answer,) = request.answers
        text = TextStream(self.tokenizer)
        with torch.inference_mode():
            while not request.done:
                engine.step()
                if answer.error is not None:
                    raise answer.error
                piece = text.update(answer.ids, request.done)
                if piece:
                    yield piece


def load_generator(name: str, *, device: str = "auto", dtype: str = "auto", base: bool = False) -> Generator:
    """A model by name (short name, hub id, folder, .gguf) or a run; base=True takes a run's base model."""
    model, tokenizer = load_for_inference(name, device=device, dtype=dtype, base=base)
    renderer = ChatRenderer(tokenizer)
    return Generator(model, tokenizer, renderer, renderer.stop_token_ids())
