"""Quantised GGUF files as llama.cpp lays them out: each tensor's type by llama.cpp's rules, each block type's values
within the rounding its arithmetic allows, the file type declared, and the sizes each type promises."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import make_tiny_model
from tunesmith.export.gguf_file import FILE_TYPES, GGUF_DTYPES, _architecture, _sources, tensor_type, write_gguf

Q = gguf.GGMLQuantizationType
HALF_STEP = {Q.Q8_0: 127, Q.Q5_1: 31, Q.Q5_0: 15, Q.Q4_1: 15, Q.Q4_0: 7}
"""Quantisation steps of each type's scale d: q8_0 d = amax/127 (values -127..127), q5_0 d = amax/16 (-16..15, so
the largest magnitude maps to -16 and the other side reaches 15 steps), q4_0 d = amax/8 (-8..7), q5_1/q4_1 d = (max -
min)/31 or /15 from the minimum. The bound below uses the smallest number of steps over the block's range."""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_tokenizer) -> dict[str, gguf.GGUFReader]:
    """The tiny model written in every type (a 320-token vocabulary: gguf-py reads a 49k one in Python, slowly)."""
    folder = tmp_path_factory.mktemp("gguf-types")
    path = make_tiny_model(folder / "model", small_tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    for dtype in GGUF_DTYPES:
        write_gguf(model, tokenizer, folder / f"{dtype}.gguf", dtype, name="tiny")
    return {dtype: gguf.GGUFReader(folder / f"{dtype}.gguf") for dtype in GGUF_DTYPES} | {"model": model}


def _weights(model) -> dict[str, np.ndarray]:
    """The model's weights under their GGUF names (rows as the file stores them: llama's q and k permuted)."""
    return {s.name: s.make() for s in _sources(model, _architecture(model))}


@pytest.mark.parametrize("dtype", [d for d in GGUF_DTYPES if d not in ("f32", "f16")])
def test_each_tensor_has_llama_cpps_type_and_its_values_within_the_block_rounding(exported, dtype):
    reader, model = exported[dtype], exported["model"]
    declared = reader.fields["general.file_type"].contents()
    assert declared == FILE_TYPES[dtype][0]
    chosen = FILE_TYPES[dtype][1]
    weights = _weights(model)
    for tensor in reader.tensors:
        want = weights[tensor.name]
        if want.ndim == 1:
            assert tensor.tensor_type == Q.F32, tensor.name  # norms stay f32, as llama.cpp keeps them
            continue
        tied = model.config.tie_word_embeddings  # then the embeddings are the output head
        head = tensor.name == "output.weight" or (tied and tensor.name == "token_embd.weight")
        expected = Q.Q8_0 if head else chosen
        assert tensor.tensor_type == expected, (tensor.name, tensor.tensor_type)
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        blocks = want.reshape(-1, 32)
        spread = blocks.max(axis=1) - blocks.min(axis=1)  # every type's scale is at most its range over its steps
        amax = np.abs(blocks).max(axis=1)
        step = np.maximum(spread, amax) / HALF_STEP[expected]
        # half a step of rounding, plus the scale's own f16 rounding (2^-11 relative) over up to 2 x steps
        bound = step * (0.5 + 2 * HALF_STEP[expected] * 2.0**-11) + 1e-8
        error = np.abs(got.reshape(-1, 32) - blocks).max(axis=1)
        assert (error <= bound).all(), (tensor.name, float((error / bound).max()))


def test_smaller_types_make_smaller_files_by_their_bits_per_weight(exported, tmp_path):
    sizes = {dtype: sum(int(t.n_bytes) for t in exported[dtype].tensors) for dtype in GGUF_DTYPES}
    assert list(sizes) == ["f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]
    assert all(a > b for a, b in zip(sizes.values(), list(sizes.values())[1:]))
    assert sizes["f16"] * 2 == sizes["f32"] + sum(  # only the 1-d tensors stay f32 in f16
        int(t.n_bytes) for t in exported["f16"].tensors if len(t.shape) == 1
    )


def test_rows_that_are_not_whole_blocks_fall_back_to_f16():
    assert tensor_type("blk.0.ffn_up.weight", (64, 48), "q4_0", tied=True) == Q.F16
    assert tensor_type("blk.0.ffn_up.weight", (64, 64), "q4_0", tied=True) == Q.Q4_0
    assert tensor_type("output.weight", (64, 64), "q4_1", tied=False) == Q.Q8_0
    assert tensor_type("token_embd.weight", (64, 64), "q4_1", tied=False) == Q.Q4_1
    assert tensor_type("blk.0.attn_norm.weight", (64,), "q8_0", tied=True) == Q.F32
