"""Constrained decoding: a random tiny model sampled at temperature 1 under a grammar never writes a broken call or
JSON that fails its schema; the engine applies the masks per row, leaving free rows untouched."""

from __future__ import annotations

import json

import pytest
import torch
from jsonschema import Draft202012Validator

from tunesmith.constrain.grammar import json_grammar, tools_grammar
from tunesmith.constrain.guide import Grammars
from tunesmith.data.schema import Tool
from tunesmith.engine.constraint import apply_masks, mask_words
from tunesmith.engine.core import generate
from tunesmith.engine.sampling import Sampling
from tunesmith.errors import DataError
from tunesmith.tokenize.render import ChatRenderer
from tunesmith.tokenize.tools import FALLBACK

ORDER = {
    "type": "object",
    "properties": {
        "item": {"type": "string", "enum": ["tea", "coffee", "cake"]},
        "size": {
            "type": "object",
            "properties": {"litres": {"type": "number"}, "cup": {"type": "boolean"}},
            "required": ["litres", "cup"],
        },
        "extras": {"type": "array", "items": {"type": "string", "enum": ["milk", "sugar"]}, "maxItems": 3},
    },
    "required": ["item", "size", "extras"],
}
TOOLS = (
    Tool("order", "Order a drink", json.dumps(ORDER)),
    Tool(
        "cancel",
        "Cancel an order",
        json.dumps({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}),
    ),
)


@pytest.fixture(scope="module")
def grammars(tokenizer, tiny_lm):
    stops = ChatRenderer(tokenizer).stop_token_ids()
    return Grammars(tokenizer, tiny_lm.config.vocab_size, stops), stops


def _sample(model, tokenizer, grammar_maker, stops, n=12, max_tokens=120):
    prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    samplings = [Sampling(max_tokens, 1.0, 1.0, seed) for seed in range(n)]
    answers = generate(
        model, [prompt] * n, samplings, pad_id=tokenizer.pad_token_id, stop_ids=stops, constraints=[grammar_maker] * n
    )
    return [(tokenizer.decode(a.ids), a.finish) for a in answers]


def test_required_calls_always_parse_and_match(grammars, tiny_lm, tokenizer):
    g, stops = grammars
    made = g.guide(tools_grammar(TOOLS, FALLBACK, "required", parallel=True))
    for text, finish in _sample(tiny_lm, tokenizer, made, stops):
        if finish == "length":
            continue  # cut by max_tokens: whatever it wrote so far is a prefix of a valid call
        read = FALLBACK.read(text)
        assert read is not None, text
        content, calls = read
        assert content == "" and calls
        for name, arguments in calls:
            tool = next(t for t in TOOLS if t.name == name)
            assert not list(Draft202012Validator(tool.schema()).iter_errors(json.loads(arguments))), arguments


def test_named_function_and_json_schema(grammars, tiny_lm, tokenizer):
    g, stops = grammars
    named = _sample(tiny_lm, tokenizer, g.guide(tools_grammar(TOOLS, FALLBACK, "cancel", True)), stops, n=6)
    finished = [FALLBACK.read(t) for t, f in named if f == "stop"]
    assert finished and all(r is not None and [c[0] for c in r[1]] == ["cancel"] for r in finished)
    schema = ORDER["properties"]["size"]
    answers = _sample(tiny_lm, tokenizer, g.guide(json_grammar(schema)), stops, n=8)
    done = [t for t, f in answers if f == "stop"]
    assert done
    for text in done:
        assert not list(Draft202012Validator(schema).iter_errors(json.loads(text))), text


def test_none_never_calls(grammars, tiny_lm, tokenizer):
    g, stops = grammars
    for text, _ in _sample(tiny_lm, tokenizer, g.guide(tools_grammar(TOOLS, FALLBACK, "none", True)), stops, n=6):
        assert FALLBACK.opening not in text


def test_bad_schema_is_named(grammars):
    g, _ = grammars
    with pytest.raises(DataError, match="response_format"):
        g.guide(json_grammar({"type": "objectx"}), "response_format")


def test_masks_touch_constrained_rows_only():
    logits = torch.zeros(3, 70)
    words = torch.full((3, mask_words(70)), -1, dtype=torch.int32)
    words[1] = 0
    words[1, 1] = 1 << 2  # token 34 alone
    apply_masks(logits, words, [1])
    assert torch.isfinite(logits[[0, 2]]).all()
    assert torch.isfinite(logits[1]).tolist() == [i == 34 for i in range(70)]


def test_some_calls_finish(grammars, tiny_lm, tokenizer):
    """The grammar lets a random model finish calls within the budget (the test above checks something)."""
    g, stops = grammars
    made = g.guide(tools_grammar(TOOLS, FALLBACK, "required", parallel=False))
    answers = _sample(tiny_lm, tokenizer, made, stops, n=8, max_tokens=200)
    assert sum(f == "stop" for _, f in answers) >= 4
