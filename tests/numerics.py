"""Tolerances derived from the arithmetic, never from what one machine printed.

Three kinds of comparison appear in the suite, each with its bound worked out here:

1. Exact identities (batched = one by one, fused loss = full cross-entropy, 4x2 accumulation = 8x1, compiled =
   eager). Mathematically the two sides are equal; in floating point they differ only by the order of summation
   (different matmul blocking for other shapes, chunked sums). They run in float64. A sum of n products computed in
   any order is within gamma_n = n*u/(1 - n*u) of the exact sum, relative to the sum of the products' magnitudes
   (Higham, Accuracy and Stability of Numerical Algorithms, 3.1). A tiny model's value passes through DEPTH such
   sums of at most TERMS products; the error of each adds up, so two evaluations differ by at most
   2 * DEPTH * gamma_TERMS relative to the magnitudes involved: `FP64_IDENTITY`. A real bug (padding attended to,
   a token dropped from the loss, a wrong normaliser) moves these values by 1e-4 relative or far more.
   transformers computes RMS norms in float32 even in a float64 model: `fp32_norm_bound` adds their share where the
   two sides may order a norm's sum differently (other shapes, inductor's fusion). Greedy answers (batched = one by
   one, continuous batching = alone) are compared in float64 too: a flip needs two of the 49k logits within about
   1e-7 of each other.

2. Storage round trips (merged safetensors, GGUF f32/f16). Writing and reading a weight is exact: the file holds the
   same bits. So the weights read back equal the written model's, cast to the file's dtype in PyTorch, bit for bit.
   The merge itself (W + s * B @ A in float32) is checked per weight against a float64 merge, within (r + 3)
   roundings of the magnitudes summed.

3. Low-precision paths compared with each other (bf16 autocast eager vs compiled). Both round the same values to
   bf16 at different points; `bf16_rounding_bound` counts the roundings.
"""

from __future__ import annotations

import torch

FP64_UNIT = 2.0**-53
"""Unit roundoff of float64: the largest relative error of one rounding."""
FP32_UNIT = 2.0**-24
"""Unit roundoff of float32."""
BF16_UNIT = 2.0**-8
"""Unit roundoff of bfloat16 (8 significant bits)."""

TERMS = 49_152
"""The longest sum in the tiny test models: the log-sum-exp over the vocabulary (hidden 64, intermediate 128 and
sequences under 512 are all shorter)."""
DEPTH = 32
"""Sums a value passes through in a 2-layer model and its loss or gradient: per layer 2 norms, q/k/v/o, attention
scores and weighting, gate/up/down (12), twice in backward; plus the final norm, head and log-sum-exp."""


def gamma(n: int, unit: float) -> float:
    """Higham's gamma_n: the relative error bound of a sum of n terms in any order."""
    return n * unit / (1 - n * unit)


FP64_IDENTITY = 2 * DEPTH * gamma(TERMS, FP64_UNIT)
"""Relative bound for two float64 evaluations of the same exact identity (about 3.5e-10)."""


def fp32_norm_bound(norms: int, hidden: int) -> float:
    """Relative bound added by RMS norms that transformers computes in float32 whatever the model's dtype.

    Two evaluations that order a norm's mean of squares differently (compiled vs eager) differ by gamma_hidden in
    float32 at each norm, in forward and again in backward.
    """
    return 2 * norms * gamma(hidden, FP32_UNIT)


TINY_NORMS = fp32_norm_bound(norms=5, hidden=64)
"""The tiny test model's RMS norms (2 layers x 2 + the final one, hidden size 64) run in float32 even in a float64
model, and other shapes or inductor's fusion may order their sums otherwise."""


def assert_identity(actual: torch.Tensor, expected: torch.Tensor, msg: str = "", extra: float = 0.0) -> None:
    """Equal up to float64 summation order: |a - e| <= (FP64_IDENTITY + extra) * max(|e|), elementwise.

    `extra` adds what a part computed in lower precision contributes (see fp32_norm_bound).

    The largest magnitude stands for the magnitudes summed (each entry of a layer's output sums terms as large as
    the layer's largest values, and more often smaller).
    """
    assert actual.dtype == expected.dtype == torch.float64, "identities are checked in float64"
    scale = float(expected.abs().max()) or 1.0
    worst = float((actual - expected).abs().max())
    bound = (FP64_IDENTITY + extra) * scale
    assert worst <= bound, f"{msg}: max |diff| {worst:.3e} > {bound:.3e}"


def assert_identity_scalar(actual: float, expected: float, msg: str = "", extra: float = 0.0) -> None:
    """A scalar identity (a loss summed over tokens) in float64; `extra` as in assert_identity."""
    bound = (FP64_IDENTITY + extra) * max(abs(expected), 1.0)
    assert abs(actual - expected) <= bound, f"{msg}: {actual!r} != {expected!r}"


def bf16_rounding_bound(roundings: int) -> float:
    """Relative difference of two values computed from the same inputs, one of them rounded to bf16 `roundings`
    more times than the other (each rounding at most BF16_UNIT relative), first order."""
    return roundings * BF16_UNIT
