"""Cross-entropy at supervised positions only: the output head never runs where nothing is learned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from tunesmith.tokenize.batches import Batch, collate
from tunesmith.tokenize.encode import Example
from tunesmith.training import distributed
from tunesmith.training.fused_ce import count_hits, linear_cross_entropy
from tunesmith.training.top_k_kl import linear_top_k_kl, top_k_kl


def causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a PEFT wrapper (adapters stay injected), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model  # type: ignore[return-value]


def learned_rows(
    model: torch.nn.Module, batch: Batch
) -> tuple[PreTrainedModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the causal LM, decoder states at the positions whose next token is learned, those tokens, the mask of such
    positions [rows, width - 1]): the output head is then run only where it is needed."""
    lm = causal_lm(model)
    device = lm.get_output_embeddings().weight.device
    ids, labels = to_device(batch.input_ids, device), to_device(batch.labels, device)
    hidden = distributed.decoder(lm)(input_ids=ids).last_hidden_state
    targets = labels[:, 1:]
    learned = targets >= 0
    return lm, hidden[:, :-1][learned], targets[learned], learned


def supervised_loss(
    model: torch.nn.Module, batch: Batch, compiled: bool = False, correct: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """(sum of token losses in fp32, number of supervised tokens) of one batch; `compiled` compiles the loss step;
    `correct`, when given, counts the supervised tokens the model ranks first (token accuracy; not with a
    teacher's targets).

    Hidden states come from the decoder; the [tokens x vocab] logits are made only for the positions whose
    next token is learned, which is most of the memory and a good part of the time saved. A batch with a
    teacher's targets (top_ids) learns them by top-k KL instead of cross-entropy.
    """
    lm, rows, goal, learned = learned_rows(model, batch)
    head = lm.get_output_embeddings()
    soft = _teacher_targets(batch, rows.device)
    if _plain_head(lm, head):
        if soft is not None:
            return linear_top_k_kl(rows, head.weight, *soft), int(learned.sum())
        return linear_cross_entropy(rows, head.weight, goal, compiled=compiled, correct=correct), int(learned.sum())
    logits = head(rows).float()
    count_hits(correct, logits, goal)
    if cap := getattr(lm.config, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cap) * cap
    if soft is not None:
        return top_k_kl(logits, *soft), int(learned.sum())
    return F.cross_entropy(logits, goal, reduction="sum"), int(learned.sum())


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch tensor on the model's device: to a GPU through pinned memory, so the copy does not wait on the
    host."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _teacher_targets(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(top ids, top probabilities) of a distillation batch on the device; None for plain labels."""
    if batch.top_ids is None or batch.top_probs is None:
        return None
    return to_device(batch.top_ids, device), to_device(batch.top_probs, device)


def _plain_head(lm: PreTrainedModel, head: torch.nn.Module) -> bool:
    """True when the head is one bias-free linear layer with nothing after it (Llama, Mistral, Qwen...)."""
    plain = type(head) is torch.nn.Linear and head.bias is None
    return plain and not getattr(lm.config, "final_logit_softcapping", None)


def mean_loss(
    model: torch.nn.Module,
    examples: Sequence[Example],
    batches: Sequence[Sequence[int]],
    pad_id: int,
    autocast: Callable[[], AbstractContextManager[object]],
) -> tuple[float, float] | None:
    """(mean loss, token accuracy) per supervised token over examples (eval mode, no gradients); None without
    examples."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    correct = torch.zeros((), dtype=torch.long, device=causal_lm(model).get_output_embeddings().weight.device)
    with torch.no_grad():
        for indices in batches:
            with autocast():
                loss, n = supervised_loss(model, collate([examples[i] for i in indices], pad_id), correct=correct)
            total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1), correct.item() / max(count, 1)
