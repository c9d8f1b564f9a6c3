"""vLLM's LoRA loader rules restated (tunesmith/export/vllm.py): what it refuses, and the --max-lora-rank it needs."""

from __future__ import annotations

import pytest

from tunesmith.export.vllm import max_lora_rank, serve_command, vllm_problems

OURS = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj", "o_proj"], "bias": "none"}


def test_a_plain_lora_adapter_is_servable():
    assert vllm_problems(OURS) == []
    assert vllm_problems(OURS | {"target_modules": ["model.layers.0.self_attn.q_proj"]}) == []  # a module's path
    assert vllm_problems(OURS | {"init_lora_weights": "gaussian", "modules_to_save": ["score"]}) == []
    # a pattern is judged by the modules the weights are for, as vLLM judges it
    assert vllm_problems(OURS | {"target_modules": "all-linear"}, ["model.layers.0.mlp.up_proj"]) == []
    assert "not embed_tokens" in vllm_problems(OURS | {"target_modules": ".*"}, ["model.embed_tokens"])[0]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"use_dora": True}, "does not serve DoRA"),
        ({"modules_to_save": ["lm_head"]}, "refuses modules_to_save (lm_head)"),
        ({"bias": "lora_only"}, "without bias"),
        ({"lora_bias": True}, "without bias"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "linear layers only, not embed_tokens"),
        ({"r": 1024}, "above vLLM's largest --max-lora-rank (512)"),
        ({"rank_pattern": {"q_proj": 600}}, "rank 600 is above"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa'"),
        ({"use_qalora": True}, "QALoRA"),
        ({"layer_replication": [[0, 1]]}, "layer_replication"),
    ],
)
def test_what_vllm_refuses_is_named(change, says):
    problems = vllm_problems(OURS | change)
    assert len(problems) == 1 and says in problems[0]


def test_the_max_lora_rank_is_the_smallest_vllm_accepts_that_holds_the_adapter():
    assert [max_lora_rank(r) for r in (1, 4, 8, 9, 16, 17, 300, 320, 321)] == [1, 8, 8, 16, 16, 32, 320, 320, 512]
    assert serve_command("m", "ft", "/x", 24) == "vllm serve m --enable-lora --max-lora-rank 32 --lora-modules ft=/x"
