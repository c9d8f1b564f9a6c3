"""Whether a run fits this device, before any compute: memory from parameter counts and activation sizes, one
function (`memory_needed`), and the settings `choose_fit` picks with it (batch tokens, activation checkpointing).

The bytes counted are what a training step holds at its peak: the weights (the frozen base in its dtype, 4-bit
NF4 or 8-bit under QLoRA; fp32 master weights for full fine-tuning, plus autocast's low-precision copies), the
trained parameters' gradients and AdamW moments, the activations saved for backward, and the fused output head's
chunk of logits. Activations per token and layer are ACTIVATION_HIDDEN x hidden + ACTIVATION_INTERMEDIATE x
intermediate values, counted from what a Llama-style decoder layer keeps for backward (tests/integration/
test_fit.py holds the sum against the peak resident memory measured on CPU, docs/gpu.md against CUDA's
max_memory_allocated where a GPU ran it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tunesmith.training.fused_ce import CHUNK_ROWS

GIB = 1024**3
ACTIVATION_HIDDEN = 9
"""Hidden-sized values a decoder layer keeps per token for backward: the two norms' inputs and outputs, q (as wide
as the hidden state), the attention output, o_proj's input, the residual sums, rotary q and k (kv-sized, counted
as one); measured 9 on SmolLM2 with intermediate values 3."""
ACTIVATION_INTERMEDIATE = 3
"""Intermediate-sized values a SwiGLU MLP keeps per token: gate and up outputs, and the activation."""
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
"""Bytes of a weight in each compute dtype."""
ACTIVATION_BYTES = {"fp32": 4.0, "bf16": 3.0, "fp16": 3.0}
"""Bytes of a saved activation: under autocast the matmul outputs are 16-bit while the residual stream, the norms'
statistics and inputs stay fp32 (2.9 bytes a value measured on average)."""
CPU_HEAP_SLACK = 3.0
"""How many times its activations a CPU step's resident peak holds under glibc's default heap (measured 2.5x
without activation checkpointing, more with it: freed blocks stay resident)."""
QUANTIZED_BYTES = {"4bit": 0.5 + 0.5 / 64 + 4 / 256 / 64, "8bit": 1.0 + 4 / 4096}
"""Bytes per quantised weight: NF4 (4 bits, an 8-bit absmax per 64 weights, double-quantised by fp32 per 256
blocks) or LLM.int8() (a byte, an fp32 scale per row of about 4096)."""
ADAM_BYTES = {"adamw": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2}
"""Optimiser state per trained parameter: two fp32 moments, or two 8-bit ones (paged: still on the GPU when it
fits)."""
HEADROOM = 0.9
"""Share of the free memory a plan may fill: allocator fragmentation and the runtime take the rest."""
CANDIDATE_TOKENS = (16384, 8192, 4096, 2048, 1024, 512)
EFFICIENT_TOKENS = 4096
"""Below this many tokens a GPU's matmuls run short of its peak: a batch this large with activation checkpointing
(a third more compute) is preferred to a smaller one without."""


@dataclass(frozen=True)
class Shape:
    """A decoder-only model's sizes, from its config."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def of(cls, config: Any) -> Shape:
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
        )

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder layers' linear projections (what QLoRA quantises and LoRA adapts)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * (2 * q + 2 * kv)
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.linear_params + embeddings + (2 * self.layers + 1) * self.hidden

    def adapter_params(self, rank: int) -> int:
        """LoRA parameters on every linear projection (all-linear) at this rank."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        per_layer = (h + q) * 2 + (h + kv) * 2 + (h + i) * 3
        return self.layers * rank * per_layer


@dataclass(frozen=True)
class Memory:
    """Bytes a training step holds at its peak, by what holds them."""

    weights: int
    trained: int
    """The trained parameters' fp32 copies (adapters), gradients and optimiser state."""
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.trained + self.activations + self.logits


def memory_needed(
    shape: Shape,
    *,
    method: str,
    precision: str,
    quantize: str = "none",
    batch_tokens: int,
    checkpointing: bool = False,
    rank: int = 16,
    optimizer: str = "adamw",
) -> Memory:
    """The peak memory of one training step (see the module's docstring for what is counted)."""
    low = BYTES[precision]
    if method == "full":
        trained_params = shape.params
        weights = shape.params * (4 + (low if low < 4 else 0))  # fp32 master, and autocast's cast copies
        trained = trained_params * (4 + ADAM_BYTES[optimizer])
    else:
        trained_params = shape.adapter_params(rank)
        rest = shape.params - shape.linear_params
        if quantize != "none":  # the quantised projections; embeddings, head and norms stay in the compute dtype
            weights = int(shape.linear_params * QUANTIZED_BYTES[quantize]) + rest * low
        else:
            weights = shape.params * low
        trained = trained_params * (4 + 4 + ADAM_BYTES[optimizer])
    width = ACTIVATION_BYTES[precision]
    per_layer = (ACTIVATION_HIDDEN * shape.hidden + ACTIVATION_INTERMEDIATE * shape.intermediate) * width
    if checkpointing:  # each layer's input kept (the fp32 residual stream); one layer rebuilt at a time in backward
        activations = batch_tokens * (shape.layers * shape.hidden * 4 + per_layer)
    else:
        activations = batch_tokens * shape.layers * per_layer
    logits = min(batch_tokens, CHUNK_ROWS) * shape.vocab * (low + 4 + 4)
    return Memory(int(weights), int(trained), int(activations), int(logits))


@dataclass(frozen=True)
class Fit:
    """The settings a run would use here, and whether they fit."""

    batch_tokens: int
    checkpointing: bool
    quantize: str
    memory: Memory
    available: int | None
    """Bytes free for the run on its device (None: unknown)."""
    slack: float = 1.0
    """Times its activations the device holds at the peak (CPU_HEAP_SLACK on CPU)."""

    @property
    def resident(self) -> int:
        """The bytes the device must have: the plan, with the CPU heap's slack."""
        memory = self.memory
        return int(memory.weights + memory.trained + self.slack * (memory.activations + memory.logits))

    @property
    def fits(self) -> bool:
        return self.available is None or self.resident <= HEADROOM * self.available

    def as_dict(self) -> dict[str, Any]:
        parts = {k: round(v / GIB, 2) for k, v in asdict(self.memory).items()}
        available = None if self.available is None else round(self.available / GIB, 2)
        return {
            "fits": self.fits,
            "batch_tokens": self.batch_tokens,
            "activation_checkpointing": self.checkpointing,
            "quantize": self.quantize,
            "needed_gib": round(self.resident / GIB, 2),
            "available_gib": available,
            "parts_gib": parts,
        }


def choose_fit(
    shape: Shape,
    *,
    method: str,
    precision: str,
    available: int | None,
    device: str = "cuda",
    quantize: str = "none",
    largest: int = CANDIDATE_TOKENS[0],
    batch_tokens: int | None = None,
    checkpointing: bool | None = None,
    rank: int = 16,
    optimizer: str = "adamw",
) -> Fit:
    """The largest batch (`batch_tokens` when given, else a candidate up to `largest`) that fits, without
    activation checkpointing where one does, else with it, preferring any batch of EFFICIENT_TOKENS or more (or
    `largest`, if smaller) with checkpointing to a smaller one without; given values are kept. When nothing fits,
    the smallest plan is returned (its `fits` False) so that the caller can say by how much."""
    sizes = (batch_tokens,) if batch_tokens else tuple(t for t in CANDIDATE_TOKENS if t <= largest) or (largest,)
    modes = (checkpointing,) if checkpointing is not None else (False, True)
    efficient = min(EFFICIENT_TOKENS, max(sizes))
    # a batch of at least `efficient` tokens with checkpointing beats a smaller one without it
    options = [(t, mode) for big in (True, False) for mode in modes for t in sizes if (t >= efficient) == big]
    plans = [
        Fit(
            tokens,
            mode,
            quantize,
            memory_needed(
                shape,
                method=method,
                precision=precision,
                quantize=quantize,
                batch_tokens=tokens,
                checkpointing=mode,
                rank=rank,
                optimizer=optimizer,
            ),
            available,
            CPU_HEAP_SLACK if device == "cpu" else 1.0,
        )
        for tokens, mode in options
    ]
    return next((plan for plan in plans if plan.fits), min(plans, key=lambda plan: plan.resident))
