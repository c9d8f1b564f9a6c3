"""Growing and shrinking a running batch's KV cache: rows join with their own prefilled cache, finished rows leave.

Rows are left-padded: a row's cached positions end together at the right, padding (mask 0) on the left. The cache is
transformers' DynamicCache, whose layers hold keys and values as [rows, heads, positions, head size].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

ROOM = 128
"""Positions a cache layer keeps free beyond what it holds, so that the next tokens are written in place."""


class RoomyLayer(DynamicLayer):
    """A DynamicLayer with room to grow: its keys and values are views of larger buffers, so a new token is written
    in place instead of the whole cache being copied (torch.cat of every layer took a quarter of a CPU decode step).
    A cache that kv.join or kv.keep_rows replaced gets new buffers at its next update."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self._key_room = _append(self.keys, getattr(self, "_key_room", None), key_states)
        self.values, self._value_room = _append(self.values, getattr(self, "_value_room", None), value_states)
        return self.keys, self.values


def _append(held: torch.Tensor, room: torch.Tensor | None, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`held` with `new` appended along positions, as a view of `room` (a new, larger buffer when it does not fit or
    `held` is not a view of it): (the view, the buffer)."""
    used = held.shape[-2] if held.numel() else 0
    total = used + new.shape[-2]
    is_view = (
        room is not None and held.numel() and held.data_ptr() == room.data_ptr() and held.stride() == room.stride()
    )
    fits = room is not None and room.shape[:2] == new.shape[:2] and total <= room.shape[-2]
    if not (fits and (is_view or used == 0)):
        fresh = new.new_empty(*new.shape[:2], total + ROOM, new.shape[-1])
        if used:
            fresh[:, :, :used] = held
        room = fresh
    room[:, :, used:total] = new
    return room[:, :, :total], room


class RoomyCache(DynamicCache):
    """A DynamicCache of RoomyLayers."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=RoomyLayer)


def _pad_left(tensor: torch.Tensor, positions: int, dim: int) -> torch.Tensor:
    """Zeros before the first `dim` position, so the tensor spans `positions`."""
    missing = positions - tensor.shape[dim]
    if missing == 0:
        return tensor
    pads = [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0]
    return F.pad(tensor, pads)


def join(cache: DynamicCache, mask: torch.Tensor, joining: DynamicCache, joining_mask: torch.Tensor) -> torch.Tensor:
    """Append the rows of `joining` to `cache` (in place), both left-padded to the longer; returns the merged mask."""
    positions = max(mask.shape[1], joining_mask.shape[1])
    for layer, other in zip(cache.layers, joining.layers, strict=True):
        layer.keys = torch.cat([_pad_left(layer.keys, positions, 2), _pad_left(other.keys, positions, 2)])
        layer.values = torch.cat([_pad_left(layer.values, positions, 2), _pad_left(other.values, positions, 2)])
    return torch.cat([_pad_left(mask, positions, 1), _pad_left(joining_mask, positions, 1)])


def keep_rows(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only `rows` (in place), then drop the leading positions that are padding in every kept row."""
    index = torch.tensor(rows, device=mask.device)
    mask = mask[index]
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else 0
    for layer in cache.layers:
        layer.keys = layer.keys[index, :, first:]
        layer.values = layer.values[index, :, first:]
    return mask[:, first:]
