"""OpenAI's function-calling data: every form it takes is read, and each fault gets its own code and line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from tunesmith.check import check_data
from tunesmith.data.formats import FORMATS, RecordError
from tunesmith.data.schema import Conversation, PreferencePair

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}]


def _call(arguments: str = '{"city": "Oslo"}', name: str = "get_weather", ident: str = "call_1") -> dict:
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}


def _chat(calls=None, answer_id: str = "call_1", **extra) -> dict:
    calls = calls if calls is not None else [_call()]
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": answer_id, "content": '{"temp": 3}'},
        {"role": "assistant", "content": "It is 3 degrees."},
    ]
    return {"messages": messages, "tools": TOOLS} | extra


def test_openai_tool_conversation_is_read_whole():
    record = FORMATS["chat"].parse(_chat(calls=[_call(), _call('{"city": "Rome"}', ident="call_2")]))
    assert isinstance(record, Conversation) and record.tools[0].name == "get_weather"
    calls = record.messages[1].tool_calls
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_1", "get_weather", {"city": "Oslo"}),
        ("call_2", "get_weather", {"city": "Rome"}),
    ]
    assert record.messages[1].content == "" and record.messages[2].tool_call_id == "call_1"


def test_legacy_functions_and_function_call_are_read():
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_weather", "content": "cold"},
            {"role": "assistant", "content": "Cold."},
        ],
        "functions": [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}],
    }
    record = FORMATS["chat"].parse(row)
    assert record.messages[1].tool_calls[0].name == "get_weather" and record.messages[2].role == "tool"


def test_sharegpt_function_call_and_observation_llama_factory_convention():
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
            {"from": "observation", "value": '{"temp": 3}'},
            {"from": "gpt", "value": "It is 3 degrees."},
        ],
        "tools": json.dumps([TOOLS[0]["function"]]),
    }
    record = FORMATS["sharegpt"].parse(row)
    assert record.tools[0].name == "get_weather"
    assert [m.role for m in record.messages] == ["user", "assistant", "tool", "assistant"]
    assert json.loads(record.messages[1].tool_calls[0].arguments) == {"city": "Oslo"}


def test_preference_pairs_keep_tool_calls_on_either_side():
    row = {
        "input": {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": TOOLS},
        "preferred_output": [{"role": "assistant", "tool_calls": [_call()]}],
        "non_preferred_output": [{"role": "assistant", "content": "I cannot know."}],
    }
    pair = FORMATS["openai-preference"].parse(row)
    assert isinstance(pair, PreferencePair) and pair.chosen_calls[0].name == "get_weather"
    chosen = pair.conversation("chosen")
    assert chosen.tools == pair.tools and chosen.messages[-1].tool_calls == pair.chosen_calls
    assert pair.conversation("rejected").messages[-1].content == "I cannot know."


@pytest.mark.parametrize(
    ("row", "code"),
    [
        (_chat(calls=[_call("{city: Oslo}")]), "invalid_tool_arguments"),
        (_chat(calls=[_call('["Oslo"]')]), "invalid_tool_arguments"),
        (_chat(calls=[_call('{"days": 2}')]), "tool_arguments_mismatch"),
        (_chat(calls=[_call('{"city": "Oslo", "days": "two"}')]), "tool_arguments_mismatch"),
        (_chat(calls=[_call(name="get_time")]), "unknown_function"),
        (_chat(answer_id="call_9"), "unmatched_tool_call_id"),
        (_chat(calls=[_call(), _call(ident="call_2")], parallel_tool_calls=False), "parallel_tool_calls"),
        (_chat() | {"tools": [{"type": "function", "function": {"parameters": {}}}]}, "invalid_tools"),
        (
            _chat() | {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "invalid_tools",
        ),
    ],
)
def test_each_fault_has_its_code(row, code):
    with pytest.raises(RecordError) as caught:
        FORMATS["chat"].parse(row)
    assert caught.value.code == code


def test_data_check_reports_tool_faults_by_line_and_counts_the_tools_tokens(tmp_path, tokenizer):
    good = [_chat() for _ in range(12)]
    bad = _chat(calls=[_call('{"days": 2}')])
    path = write_jsonl(tmp_path / "tools.jsonl", [*good[:5], bad, *good[5:]])
    report = check_data(str(path), tokenizer)
    assert [(p.line, p.code) for p in report.errors] == [(6, "tool_arguments_mismatch")]
    without = write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if k != "tools"} for r in good])
    stats, plain = report.stats["train"], check_data(str(without), tokenizer).stats["train"]
    assert stats["tokens"] > plain["tokens"] + 12 * 50  # each example's tools are rendered into its system turn
