"""Tool conversations rendered as each model will see them: through the template's own tool support (Qwen2.5, Llama
3.2, golden), else the fallback (the default SmolLM2's template has none); calls and answers trained, tool results
never."""

from __future__ import annotations

import json

import pytest

from tests.families import BY_NAME, family_tokenizer
from tunesmith.data.formats import FORMATS
from tunesmith.data.schema import Message, ToolCall, as_dicts
from tunesmith.tokenize.render import ChatRenderer
from tunesmith.tokenize.tools import FALLBACK, CallSyntax

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
ROW = {
    "messages": [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "20 degrees"},
        {"role": "assistant", "content": "It is 20."},
    ],
    "tools": TOOLS,
}
TRAINED = {  # golden: the trained text of ROW, per template
    "qwen2.5": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 20.<|im_end|>",
    ],
    "llama3": ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>', "It is 20.<|eot_id|>"],
    "default": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 20.<|im_end|>",
    ],
}
SYNTAX = {
    "qwen2.5": CallSyntax("<tool_call>\n", "\n</tool_call>", "\n", "name", "arguments", True),
    "llama3": CallSyntax("", "", "", "name", "parameters", False),
    "default": FALLBACK,
}


@pytest.fixture(scope="module")
def tokenizers(tokenizer):
    return {
        "qwen2.5": family_tokenizer(BY_NAME["qwen2.5"]),
        "llama3": family_tokenizer(BY_NAME["llama3"]),
        "default": tokenizer,
    }


@pytest.mark.parametrize("name", list(TRAINED))
def test_tool_conversation_trains_calls_and_answers_only(tokenizers, name):
    tokenizer = tokenizers[name]
    renderer = ChatRenderer(tokenizer)
    record = FORMATS["chat"].parse(ROW)
    rendered = renderer.render(record)
    assert renderer.call_syntax == SYNTAX[name]
    assert [rendered.text[s:e] for s, e in rendered.spans] == TRAINED[name]
    assert "20 degrees" in rendered.text and "get_weather" in rendered.text[: rendered.spans[0][0]]  # tools listed
    if name != "default":  # the template's own rendering, tools and all
        expected = tokenizer.apply_chat_template(as_dicts(record.messages), tools=TOOLS, tokenize=False)
        assert rendered.text == expected


def test_weight_zero_leaves_a_call_untrained(tokenizers):
    row = json.loads(json.dumps(ROW))
    row["messages"][2]["weight"] = 0
    for name in TRAINED:
        rendered = ChatRenderer(tokenizers[name]).render(FORMATS["chat"].parse(row))
        assert [rendered.text[s:e] for s, e in rendered.spans] == TRAINED[name][1:]


@pytest.mark.parametrize("name", list(TRAINED))
def test_serving_prompt_is_the_training_text_before_the_answer(tokenizers, name):
    renderer = ChatRenderer(tokenizers[name])
    record = FORMATS["chat"].parse(ROW)
    rendered = renderer.render(record)
    prompt = renderer.prompt(record.messages[:2], tools=record.tools)
    assert rendered.text.startswith(prompt) and rendered.spans[0][0] == len(prompt)


@pytest.mark.parametrize("name", list(TRAINED))
def test_calls_read_back_as_written(tokenizers, name):
    syntax = ChatRenderer(tokenizers[name]).call_syntax
    calls = (ToolCall("a", "get_weather", '{"city": "Paris"}'), ToolCall("b", "get_time", "{}"))
    wanted = calls if syntax.parallel else calls[:1]
    text = syntax.write(wanted)
    assert syntax.read("Let me look. " + text if syntax.opening else text) is not None
    content, read = syntax.read(text)
    assert content == "" and read == [(c.name, c.arguments) for c in wanted]
    assert syntax.read("No call here.") is None
    assert syntax.read(text[:-3]) is None  # a call cut short is not a call


def test_fallback_merges_consecutive_tool_results_into_one_user_turn(tokenizer):
    messages = (
        Message("user", "Weather in Paris and Rome?"),
        Message(
            "assistant",
            "",
            tool_calls=(
                ToolCall("a", "get_weather", '{"city": "Paris"}'),
                ToolCall("b", "get_weather", '{"city": "Rome"}'),
            ),
        ),
        Message("tool", "20", tool_call_id="a"),
        Message("tool", "25", tool_call_id="b"),
    )
    prompt = ChatRenderer(tokenizer).prompt(messages)
    assert "<tool_response>\n20\n</tool_response>\n<tool_response>\n25\n</tool_response><|im_end|>" in prompt
    assert prompt.count("<|im_start|>user") == 2
