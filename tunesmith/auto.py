"""The rules that fill in a run's "auto" values: epochs for a data set's size, the learning rate for a method, a
model's width and an objective, the micro-batch token budget per device, warm-up and evaluation shares, and the plan
`tunesmith data check` prints of them."""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
DEFAULT_EPOCHS = 3
MAX_EPOCHS = 25
LORA_RATE_AT_WIDTH_2000 = 6.8e-4
"""LoRA's learning rate for a model 2,000 wide: 13.6x full fine-tuning's 5e-5, with alpha / rank scaling (alpha 32),
so that it hardly depends on the rank. "LoRA Without Regret" (Thinking Machines 2025) finds LoRA's best rate about
10x full fine-tuning's and nearer 15x in short runs, and runs of a few hundred examples are short; this value puts
the default model at the best column of the quality benchmark's learning-rate grid (docs/quality.md)."""
LORA_RATE_WIDTH_EXPONENT = 0.781
"""The rate falls with the model's width as (2000 / width)^0.781 (Tinker's fit on Llama models): 1.8e-3 for
SmolLM2-135M (576 wide), 3.9e-4 for an 8B model (4,096)."""
FULL_LEARNING_RATE = 2e-5
"""Full fine-tuning's rate, whatever the width (the quality benchmark measures adapters only)."""
PREFERENCE_RATE_DIVISOR = 10
"""Preference objectives (dpo, simpo) learn at a tenth of the supervised rate: on examples/brand-voice a tenth
learns the preference and keeps the general questions, the supervised rate itself forgets them (the measurements:
docs/quality.md and examples/brand-voice/README.md). The simpo loss is trained with --objective dpo and takes the
same rate."""
AUTO_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
PAIR_BATCH_SHARE = 2
"""Preference runs take 1/PAIR_BATCH_SHARE of AUTO_BATCH_TOKENS: a pair's row holds its prompt and both answers, so
half the budget carries the step size DPO's auto learning rate was chosen at, with half the activations
(docs/benchmarks.md)."""


@dataclass(frozen=True)
class AutoRules:
    """How "auto" treats an objective, where it differs from learning tokens by cross-entropy."""

    batch_share: int = 1
    """The micro-batch budget is AUTO_BATCH_TOKENS divided by this."""
    rate_divisor: float = 1
    """The automatic learning rate is the supervised one divided by this."""
    why: str = ""
    """What the data check says of the division."""


OBJECTIVE_RULES: dict[str, AutoRules] = {
    "dpo": AutoRules(PAIR_BATCH_SHARE, PREFERENCE_RATE_DIVISOR, "for preference pairs, trained with --objective dpo"),
    "grpo": AutoRules(1, PREFERENCE_RATE_DIVISOR, "for reinforcement from graded answers (--objective grpo)"),
}
"""Each objective's auto rules (an objective not named here is treated as sft)."""


def _rules(objective: str) -> AutoRules:
    return OBJECTIVE_RULES.get(objective, AutoRules())


def auto_batch_tokens(device: str, objective: str) -> int:
    """The micro-batch token budget `batch_tokens: auto` means on a device type for an objective."""
    return AUTO_BATCH_TOKENS.get(device, AUTO_BATCH_TOKENS["cpu"]) // _rules(objective).batch_share


AUTO_WARMUP_FRACTION = 0.05
AUTO_EVALS_PER_RUN = 5
AUTO_EVAL_SHARE = 0.3
"""Held-out evaluations (forward only, about a third of a training step per token) cost ~10% of a run, but a run
evaluates at least once an epoch (up to AUTO_EVALS_PER_RUN): on numpy-summaries, whose held-out set is a third of its
training set, the share alone allowed two evaluations (steps 88 and 176 of 176) and kept step 88 (held-out loss
1.504), where evaluating every 22 steps finds 1.426 at step 110, near the end of epoch 2 (docs/quality.md)."""
AUTO_COMPILE_MIN_TOKENS = 50_000
"""Trained tokens from which compiling pays for itself (see RunConfig.compile)."""


def auto_epochs(examples: int) -> int:
    """Aim for 3 epochs, clamping examples x epochs into [100, 25000] and epochs into [1, 25] (as OpenAI does)."""
    if examples <= 0:
        return DEFAULT_EPOCHS
    if examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / examples))
    if examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return DEFAULT_EPOCHS


def auto_learning_rate(method: str, width: int | None, objective: str = "sft") -> float:
    """The peak learning rate "auto" means for a method, a model of this hidden size (None: 2,000 assumed) and an
    objective (a tenth for preference pairs)."""
    if method == "full":
        rate = FULL_LEARNING_RATE
    else:
        rate = LORA_RATE_AT_WIDTH_2000 * (2000 / (width or 2000)) ** LORA_RATE_WIDTH_EXPONENT
    return float(f"{rate / _rules(objective).rate_divisor:.2g}")


def auto_plan(examples: int, method: str, width: int | None, objective: str = "sft") -> list[str]:
    """What "auto" chooses for a data set of `examples` and why, a line each (`tunesmith data check` prints them)."""
    epochs = auto_epochs(examples)
    rule = "about 3 passes" if epochs == DEFAULT_EPOCHS else "examples x epochs kept within 100-25,000"
    if method == "full":
        rate_why = "full fine-tuning's default"
    else:
        wide = f"{width:,} wide" if width else "width unknown, 2,000 assumed"
        rate_why = f"LoRA's rule for a model {wide}: 6.8e-4 x (2000 / width)^0.781"
    rules = _rules(objective)
    if rules.rate_divisor != 1:
        rate_why += f", divided by {rules.rate_divisor:g} {rules.why}"
    return [
        f"{epochs} epochs for {examples:,} examples ({rule}, as OpenAI's auto does)",
        f"learning rate {auto_learning_rate(method, width, objective):.2g} ({rate_why})",
        "held-out evaluations at least once an epoch, up to 5; final/ keeps the step with the lowest held-out loss",
    ]
