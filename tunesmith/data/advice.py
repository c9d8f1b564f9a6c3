"""Which objective and method suit a data set, from its shape and its size, each with the reason.

The shape decides the objective: preference pairs learn with dpo, plain text with text (continued pre-training),
conversations with sft. The size decides little else: an adapter learns a modest data set as well as full
fine-tuning ("LoRA Without Regret", Thinking Machines 2025: LoRA on every layer with about 10x the learning rate
matches full fine-tuning until the data outgrows the adapter's capacity), so LoRA is the advice below tens of millions
of trained tokens, and a small set is told what it can and cannot teach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunesmith.data.formats import auto_objective

FULL_TOKENS = 20_000_000
"""Trained tokens (examples x epochs) from which full fine-tuning is worth trying: a rank-16 adapter's capacity is
of the order of its few million parameters, and a data set many times that may hold more than it can learn. A rough
line, not a measurement: the quality benchmark (docs/quality.md) measures adapters only."""
FEW_ROWS = 50
"""Below this many examples a run can teach a format or a tone, hardly facts."""

WHY_OBJECTIVE = {
    "dpo": "preference pairs (a chosen and a rejected answer): dpo makes the chosen answer the likelier one "
    "(examples/brand-voice)",
    "text": "plain text: continued pre-training learns its vocabulary, style and facts; to answer questions about "
    "it as well, run stages: text on these documents, then sft on questions and answers (examples/domain)",
    "sft": "conversations that end with an answer: sft learns the answers, never the prompts (examples/call-summaries)",
}


@dataclass(frozen=True)
class Advice:
    """What `tunesmith data check` suggests training with."""

    objective: str
    """sft, text or dpo."""
    method: str
    """lora or full."""
    reasons: tuple[str, ...]
    """One line per choice."""

    def as_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "method": self.method, "reasons": list(self.reasons)}

    def command(self) -> str:
        return f"--objective {self.objective} --method {self.method}"


def advise(format_name: str, rows: int, trained_tokens: int) -> Advice:
    """The advice for a data set of this format with `rows` examples and `trained_tokens` over the whole run."""
    objective = auto_objective(format_name)
    reasons = [f"objective {objective}: {WHY_OBJECTIVE[objective]}"]
    if trained_tokens >= FULL_TOKENS:
        method = "full"
        reasons.append(
            f"method full: {trained_tokens:,} trained tokens may outgrow a rank-16 adapter; full fine-tuning "
            "(or lora.rank 64 and more) can hold more, for far more memory"
        )
    else:
        method = "lora"
        reasons.append(
            f"method lora: {trained_tokens:,} trained tokens are well within what an adapter learns as well as full "
            "fine-tuning does, in a fraction of the memory, served per request beside the base model"
        )
    if rows < FEW_ROWS:
        reasons.append(
            f"{rows} examples: enough to teach a format or a tone; facts and skills want hundreds "
            "(distil more from a larger model: examples/distill)"
        )
    return Advice(objective, method, tuple(reasons))
