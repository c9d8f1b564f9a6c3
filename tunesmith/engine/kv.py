"""Growing and shrinking a running batch's KV cache: rows join with their own prefilled cache, finished rows leave.

Rows are left-padded: a row's cached positions end together at the right, padding (mask 0) on the left. The cache is
transformers' DynamicCache, whose layers hold keys and values as [rows, heads, positions, head size].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def _pad_left(tensor: torch.Tensor, positions: int, dim: int) -> torch.Tensor:
    """Zeros before the first `dim` position, so the tensor spans `positions`."""
    missing = positions - tensor.shape[dim]
    if missing == 0:
        return tensor
    pads = [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0]
    return F.pad(tensor, pads)


def merge(cache: DynamicCache, mask: torch.Tensor, joining: DynamicCache, joining_mask: torch.Tensor) -> torch.Tensor:
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
