"""Cross-entropy at supervised positions only: the output head never runs where nothing is learned."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from tunesmith.tokenize.pack import Batch


def causal_lm(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside a PEFT wrapper (adapters stay injected), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model  # type: ignore[return-value]


def supervised_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """(sum of token losses in fp32, number of supervised tokens) of one batch.

    Hidden states come from the decoder; the [tokens x vocab] logits are made only for the positions whose
    next token is learned, which is most of the memory and a good part of the time saved.
    """
    lm = causal_lm(model)
    device = lm.get_output_embeddings().weight.device
    ids, labels = batch.input_ids.to(device), batch.labels.to(device)
    hidden = lm.get_decoder()(input_ids=ids).last_hidden_state
    targets = labels[:, 1:]
    learned = targets >= 0
    logits = lm.get_output_embeddings()(hidden[:, :-1][learned])
    return F.cross_entropy(logits.float(), targets[learned], reduction="sum"), int(learned.sum())
