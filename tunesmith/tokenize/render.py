"""Render conversations with the model's own chat template and mark the characters to learn from.

By default every assistant turn is supervised (weight 0 leaves one out): from where the generation prompt ends (so
whatever the template writes before the content, such as Qwen3's empty `<think></think>` block or Mistral's space,
is learned as the model will have to write it) through the end-of-turn token that closes it, so the model learns to
stop, also when pad == eos.

A template that refuses a system role (Gemma 2 raises) gets the system message merged into the first user turn,
separated by a blank line, as the family's next template (Gemma 3) does itself.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from tunesmith.data.schema import Conversation, Message, Tool, as_dicts
from tunesmith.errors import ConfigError
from tunesmith.tokenize.literal import content_spans, encode_prompt, injected, specials_in
from tunesmith.tokenize.template import END, GENERATE, START, Glue, jinja, learn_glue
from tunesmith.tokenize.tools import FALLBACK, CallSyntax, fallback_messages, native_syntax, tool_dicts

log = logging.getLogger(__name__)

Supervise = Literal["assistant", "last", "all"]
Span = tuple[int, int]
SUPERVISE_MODES: tuple[Supervise, ...] = ("assistant", "last", "all")
VERIFY_SAMPLE = 32
SYSTEM_JOIN = "\n\n"
"""Between a merged system message and the first user message (Gemma 3's own template joins them so)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered example and the character spans that are trained."""

    text: str
    """The text exactly as the template renders it."""
    spans: tuple[tuple[int, int], ...]
    """[start, end) character ranges to learn from, in order."""
    literal: tuple[tuple[int, int], ...] = ()
    """[start, end) of special-token strings typed inside message contents: tokenised as plain text
    (tokenize/literal.py)."""


def supervised_turns(messages: tuple[Message, ...], supervise: Supervise) -> list[int]:
    """Indexes of the assistant messages to learn from."""
    eligible = [i for i, m in enumerate(messages) if m.role == "assistant" and m.weight != 0]
    return eligible[-1:] if supervise == "last" else eligible


def special_strings(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The text of every special token, longest first."""
    found = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    found.update(tokenizer.all_special_tokens)
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def refuses_system(tokenizer: PreTrainedTokenizerBase) -> bool:
    """The template raises on a system message where it renders the same conversation without one."""
    user = {"role": "user", "content": "hi"}
    try:
        jinja(tokenizer, [user])
    except Exception:
        return False  # it refuses more than the system role: nothing to learn from this probe
    try:
        jinja(tokenizer, [{"role": "system", "content": "be brief"}, user])
    except Exception:
        return True
    return False


def merge_system(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """The system message, if first, folded into the first user message (SYSTEM_JOIN between them)."""
    if len(messages) < 2 or messages[0].role != "system" or messages[1].role != "user":
        return messages
    system, user = messages[0], messages[1]
    merged = Message("user", system.content + SYSTEM_JOIN + user.content, weight=user.weight)
    return (merged, *messages[2:])


class ChatRenderer:
    """Renders conversations: by concatenating learned glue when the template allows, else through Jinja."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, supervise: Supervise = "assistant") -> None:
        if supervise not in SUPERVISE_MODES:
            raise ConfigError(f"supervise {supervise!r} is unknown", hint=f"use one of {', '.join(SUPERVISE_MODES)}")
        self.tokenizer = tokenizer
        self.supervise = supervise
        self.glue: Glue | None = learn_glue(tokenizer)
        self.specials = special_strings(tokenizer)
        self.merges_system = refuses_system(tokenizer)
        """System messages are folded into the first user turn before rendering."""
        stops = tuple(tokenizer.convert_ids_to_tokens(i) for i in self.stop_token_ids())
        self.native_tools = native_syntax(tokenizer, stops)
        """The template's own call syntax; None: it ignores tools, and the fallback (tokenize/tools.py) renders
        them."""

    @property
    def call_syntax(self) -> CallSyntax:
        """How this model writes function calls."""
        return self.native_tools or FALLBACK

    def _messages(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        return merge_system(messages) if self.merges_system else messages

    def _with_tools(self, messages: tuple[Message, ...], tools: tuple[Tool, ...]) -> tuple[tuple[Message, ...], bool]:
        """(the messages to render, whether the template renders the tools itself): a conversation with tools
        rendered natively, or turned into plain messages by the fallback."""
        uses = bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)
        if uses and self.native_tools is None:
            return self._messages(fallback_messages(messages, tools)), False
        return self._messages(messages), uses

    def verify(self, conversations: list[Conversation]) -> None:
        """Compare fast and reference rendering on a sample; fall back to Jinja for good on any difference."""
        for conversation in conversations[:VERIFY_SAMPLE]:
            messages, native = self._with_tools(conversation.messages, conversation.tools)
            fast = None if native else self._fast(messages)
            if fast is not None and fast != self._exact(messages):
                log.warning("chat template renders differently than probed: using Jinja for every example")
                self.glue = None
                return

    def render(self, conversation: Conversation) -> Rendered:
        """The text and the supervised spans of one conversation."""
        messages, native = self._with_tools(conversation.messages, conversation.tools)
        if native:
            return self._exact(messages, conversation.tools)
        return self._fast(messages) or self._exact(messages)

    def prompt(
        self,
        messages: tuple[Message, ...],
        options: Mapping[str, object] | None = None,
        tools: tuple[Tool, ...] = (),
    ) -> str:
        """The text a model continues to answer: the conversation plus the generation prompt (`options`: the
        template's own variables, e.g. {"enable_thinking": False} for Qwen3; `tools`: the functions it may call)."""
        return self._prompt(*self._with_tools(messages, tools), options, tools)

    def _prompt(
        self, rendered: tuple[Message, ...], native: bool, options: Mapping[str, object] | None, tools: tuple[Tool, ...]
    ) -> str:
        functions = tool_dicts(tools) if native else None
        return jinja(self.tokenizer, as_dicts(rendered), generate=True, options=options, tools=functions)

    def prompt_ids(
        self,
        messages: tuple[Message, ...],
        options: Mapping[str, object] | None = None,
        tools: tuple[Tool, ...] = (),
    ) -> list[int]:
        """The ids of `prompt`; special-token strings typed inside the messages stay text (DataError where the
        template rewrites a message that holds one)."""
        rendered, native = self._with_tools(messages, tools)
        text = self._prompt(rendered, native, options, tools)
        return encode_prompt(self.tokenizer, text, [m.content for m in rendered], self.specials)

    def stop_token_ids(self) -> list[int]:
        """The token that closes an assistant turn under this template, and eos: generation stops at either."""
        probe = "tunesmith-probe-answer"
        text = self._exact((Message("user", "hi"), Message("assistant", probe))).text
        after = text.find(probe) + len(probe)
        closing = text[after : self._turn_end(text, after)].strip()
        ids = [self.tokenizer.convert_tokens_to_ids(closing)] if closing in self.specials else []
        eos = self.tokenizer.eos_token_id
        return [i for i in dict.fromkeys([*ids, eos]) if isinstance(i, int) and i >= 0]

    def _turn_end(self, text: str, start: int) -> int:
        """End of the end-of-turn token that follows a content ending at `start` (the first special token)."""
        hits = [(at, len(s)) for s in self.specials if (at := text.find(s, start)) >= 0]
        if hits:
            at, length = min(hits)
            return at + length
        return start + len(text[start:].rstrip())

    def _spans(
        self, text: str, ends: list[tuple[int, int]], messages: tuple[Message, ...], contents: list[Span] | None
    ) -> Rendered:
        """The rendering with its trained spans, and where special strings were typed inside contents (whose
        spans `contents` gives when known)."""
        literal: tuple[Span, ...] = ()
        if any(specials_in(m.content, self.specials) for m in messages):
            found = contents if contents is not None else content_spans(text, [m.content for m in messages])
            literal = tuple(injected(text, found, self.specials))
        if self.supervise == "all":
            return Rendered(text, ((0, len(text)),), literal)
        return Rendered(text, tuple((s, self._turn_end(text, e)) for s, e in ends), literal)

    def _fast(self, messages: tuple[Message, ...]) -> Rendered | None:
        if self.glue is None:
            return None
        roles = [START] + [m.role for m in messages] + [END]
        keys = list(itertools.pairwise(roles))
        if any(k not in self.glue.pieces for k in keys):
            return None
        chosen = set(supervised_turns(messages, self.supervise))
        parts: list[str] = []
        length = 0
        ends: list[tuple[int, int]] = []
        contents: list[Span] = []
        for i, message in enumerate(messages):
            glue = self.glue.pieces[keys[i]]
            content = message.content.strip() if self.glue.strips else message.content
            parts += [glue, content]
            answer = length + self._answer_offset(keys[i], glue)
            length += len(glue)
            contents.append((length, length + len(content)))
            if i in chosen:
                ends.append((answer, length + len(content)))
            length += len(content)
        parts.append(self.glue.pieces[keys[-1]])
        return self._spans("".join(parts), ends, messages, contents)

    def _answer_offset(self, key: tuple[str, str], glue: str) -> int:
        """Where, inside the glue before an assistant turn, the generation prompt ends: what follows is the
        model's to write."""
        prompt = self.glue.pieces.get((key[0], GENERATE)) if self.glue else None
        return len(prompt) if prompt is not None and glue.startswith(prompt) else len(glue)

    def _exact(self, messages: tuple[Message, ...], tools: tuple[Tool, ...] = ()) -> Rendered:
        """Reference path: the spans come from rendering each prefix of the conversation."""
        dicts, functions = as_dicts(messages), tool_dicts(tools)
        text = jinja(self.tokenizer, dicts, tools=functions)
        ends: list[tuple[int, int]] = []
        cursor = 0
        for i in supervised_turns(messages, self.supervise):
            before = jinja(self.tokenizer, dicts[:i], generate=True, tools=functions) if i else ""
            start = len(before) if text.startswith(before) else cursor
            calls = messages[i].tool_calls
            content = self.call_syntax.write(calls) if calls else messages[i].content
            at = text.find(content, start)
            if at < 0:
                content = content.strip()
                at = text.find(content, start)
            if at < 0:
                raise ConfigError(
                    "the chat template changes assistant contents, so the trained tokens cannot be located",
                    hint="use --supervise all, or give the model a standard chat template",
                )
            # the answer starts where the generation prompt ends: what the template writes before the content is
            # the model's to write too
            answer = start if before and text.startswith(before) else at
            ends.append((answer, at + len(content)))
            cursor = at + len(content)
        return self._spans(text, ends, messages, None)


EMPTY_THINKING = re.compile(r"\A\s*<think>\s*</think>\s*")


def without_empty_thinking(text: str) -> str:
    """An answer without the empty think block a hybrid-reasoning family (Qwen3) writes before it when tuned on
    answers alone: what is scored and shown is the answer."""
    return EMPTY_THINKING.sub("", text, count=1)
