"""Full fine-tuning on several processes: FSDP2 (`torch.distributed.fsdp.fully_shard`) shards every weight, its
gradient and its optimiser moments over the ranks, so each rank holds 1/N of them between layers.

Each decoder layer is one FSDP unit (gathered for its forward and backward, then freed); the rest (embeddings, the
final norm, the output head, tied or not) is the root unit, `Trunk`: training calls the decoder through it and
then runs the head only at learned positions, outside the forward but while the root's weights are still gathered
(FSDP2 keeps the root gathered from its forward to its backward). Gradients are summed over the ranks (each rank's
loss is already divided by the step's global count), as under DDP.

Checkpoints and final/ go through `torch.distributed.checkpoint.state_dict`: weights and optimiser moments are
gathered whole onto rank 0 (in CPU memory) and written in the same safetensors files as one process writes, so a
checkpoint resumes on any number of processes, and loading scatters the whole tensors back into shards.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

_TRUNKS: weakref.WeakKeyDictionary[torch.nn.Module, Trunk] = weakref.WeakKeyDictionary()
"""The root FSDP unit of each sharded causal LM."""
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
"""Whole tensors, on rank 0 only, in CPU memory."""
_SCATTER = StateDictOptions(full_state_dict=True)
"""Every rank passes the whole tensors; each keeps its shard."""


class Trunk(torch.nn.Module):
    """The causal LM's decoder and output head as one module, the root FSDP unit; its forward is the decoder's."""

    def __init__(self, decoder: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.decoder, self.head = decoder, head

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.decoder(*args, **kwargs)


def shard(lm: torch.nn.Module, compute: torch.dtype, cuda: bool) -> Trunk:
    """Shard a causal LM over the ranks in place (each decoder layer, then the rest); the module to call for its
    decoder's forward. On CUDA in bf16/fp16 the gathered weights compute in that dtype and gradients are summed in
    fp32 (FSDP2's mixed precision); on CPU, autocast does as it does on one process."""
    policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32) if cuda else MixedPrecisionPolicy()
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()  # type: ignore[operator]
    units: list[FSDPModule] = [fully_shard(layer, mp_policy=policy) for layer in getattr(decoder, "layers", [])]
    trunk = Trunk(decoder, head)
    units.append(fully_shard(trunk, mp_policy=policy))
    for unit in units:
        unit.set_gradient_divide_factor(1.0)  # a sum, not FSDP's mean over ranks
        unit.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
    _TRUNKS[lm] = trunk
    return trunk


def sharded(model: torch.nn.Module) -> bool:
    """Whether this model's weights are spread over the ranks (method full on several processes)."""
    return model in _TRUNKS


def set_gradient_sync(trunk: torch.nn.Module, sync: bool) -> None:
    """Whether this backward reduces the gradients over the ranks (the step's last micro-batch) or keeps them."""
    trunk.set_requires_gradient_sync(sync)  # type: ignore[operator]


def _settled(model: torch.nn.Module) -> None:
    """The root's weights back in their shards (an evaluation's forward leaves them gathered)."""
    trunk = _TRUNKS[model]
    trunk.reshard()  # type: ignore[operator]


def full_weights(model: torch.nn.Module, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The named weights whole, on rank 0 (an empty dict on the others): every rank must call it. By default the
    model's weights and buffers, each once: a tied output head is its embedding, saved under the embedding's name
    as `save_pretrained` saves it."""
    if names is None:
        names = {name for name, _ in [*model.named_parameters(), *model.named_buffers()]}
    _settled(model)
    state = get_model_state_dict(model, options=_GATHER)
    return {name: value.contiguous() for name, value in state.items() if name in names}


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Whole weights (the same on every rank) into their shards."""
    _settled(model)
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state whole, on rank 0, as `optimizer.state_dict()` of one process numbers it (parameters
    by position over the groups); every rank must call it."""
    _settled(model)
    state = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    if not state:
        return {}
    position = {name: index for index, name in enumerate(n for g in state["param_groups"] for n in g["params"])}
    groups = [{**group, "params": [position[n] for n in group["params"]]} for group in state["param_groups"]]
    return {"state": {position[name]: values for name, values in state["state"].items()}, "param_groups": groups}


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A whole optimiser state numbered as one process numbers it, into this rank's shards."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**group, "params": [order[i] for i in group["params"]]} for group in saved["param_groups"]]
    state = {order[index]: values for index, values in saved["state"].items()}
    _settled(model)
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=_SCATTER)
