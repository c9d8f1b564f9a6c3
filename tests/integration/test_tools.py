"""Tool calling end to end: OpenAI's function-calling data trains a tiny model (the default tokenizer's template has no
tools, so the fallback renders them), and a real `tunesmith serve` answers through the official openai client with
tool_calls, streamed and not, under the grammar of the functions' schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest
from jsonschema import Draft202012Validator

from tests.conftest import write_jsonl
from tests.integration.test_export import _template_of, go_render
from tests.integration.test_serve import serving
from tunesmith.check import check_data
from tunesmith.config import build_config
from tunesmith.data.formats import FORMATS
from tunesmith.distill.collect import CollectSettings, TeacherSettings, collect
from tunesmith.evaluate.evaluation import EvalOptions, evaluate
from tunesmith.evaluate.report import write_report
from tunesmith.evaluate.tool_metrics import TOOL_METRICS
from tunesmith.export.ollama import modelfile
from tunesmith.runs import RunFolder
from tunesmith.tokenize.render import ChatRenderer
from tunesmith.training.runner import train

KEY = "tool-key"
GUIDE = Path(__file__).resolve().parents[1] / "data" / "tools" / "openai-guide.jsonl"
CITIES = ("Paris", "Oslo", "Lima", "Cairo")
ASKS = {  # which function a question wants: the tiny model learns to tell them apart (held out: the last of each)
    "get_weather": (
        "What is the weather in Paris?",
        "Weather in Paris, please.",
        "Is it cold in Paris?",
        "Tell me the weather in Paris now.",
    ),
    "get_time": (
        "What time is it in Paris?",
        "The time in Paris, please.",
        "Is it late in Paris?",
        "Tell me the time in Paris now.",
    ),
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": list(CITIES)}},
            "required": ["city"],
        },
    },
}
ORDER = {  # enums, a nested object and an array: what the sampled requests must never break
    "type": "function",
    "function": {
        "name": "order",
        "parameters": {
            "type": "object",
            "properties": {
                "item": {"type": "string", "enum": ["tea", "coffee"]},
                "size": {
                    "type": "object",
                    "properties": {"ml": {"type": "integer"}, "hot": {"type": "boolean"}},
                    "required": ["ml", "hot"],
                },
                "extras": {"type": "array", "items": {"type": "string", "enum": ["milk", "sugar"]}},
            },
            "required": ["item", "size", "extras"],
        },
    },
}


TIME = {"type": "function", "function": {**WEATHER["function"], "name": "get_time", "description": "The time"}}


def _row(ask: str, name: str) -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}
    return {
        "messages": [{"role": "user", "content": ask}, {"role": "assistant", "tool_calls": [call]}],
        "tools": [WEATHER, TIME],
    }


@pytest.fixture(scope="module")
def tool_run(adapter_base, tmp_path_factory) -> Path:
    """A full fine-tune of the tiny model that learned which function each question wants (LoRA alone moves a
    random 2-layer model too little to tell them apart)."""
    root = tmp_path_factory.mktemp("tools")
    data = write_jsonl(root / "train.jsonl", [_row(a, name) for name, asks in ASKS.items() for a in asks[:3]] * 4)
    values = {"data": str(data), "model": str(adapter_base), "method": "full", "batch_tokens": 1024}
    values |= {"precision": "fp32", "epochs": 100, "max_steps": 200, "learning_rate": 3e-3, "eval_every": 1000}
    values |= {"compile": "off"}  # compiling a 2-layer model costs more than its 200 steps gain
    return train(build_config(values), root / "run").run_dir


@pytest.fixture(scope="module")
def tool_server(tool_run):
    """The tuned model served by a real `tunesmith serve`."""
    with serving(tool_run / "final", "--api-key", KEY, "--dtype", "float32") as (_, url):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        yield client, client.models.list().data[0].id


def test_eval_scores_calls_base_against_tuned(tool_run, tmp_path):
    # the trained questions: unaided (no grammar), a 2-layer random model tuned on 6 questions writes their calls
    # exactly but not always a new question's (the served tests above run under the grammar; examples/tool-use
    # measures a real model on held-out data)
    held_out = write_jsonl(tmp_path / "held.jsonl", [_row(a, name) for name, asks in ASKS.items() for a in asks[:3]])
    evaluation = evaluate(str(tool_run), EvalOptions(data=str(held_out), guard=False, dtype="float32"))
    assert evaluation.held_out.kind == "tools" and evaluation.metrics[:4] == list(TOOL_METRICS)
    tuned, base = evaluation.tuned.summary()["metrics"], evaluation.baseline.summary()["metrics"]
    assert tuned["tool_exact"] == tuned["tool_name"] == tuned["tool_valid"] == tuned["tool_arguments"] == 100
    assert base["tool_exact"] == 0  # a random model writes no well-formed call unaided
    html = write_report(evaluation, tmp_path / "eval", None)
    report = json.loads((html.parent / "report.json").read_text())
    assert report["tuned"]["metrics"]["tool_exact"] == 100 and "tool_exact" in html.read_text()
    assert "exact tool calls (%) 0.0 -> 100.0" in evaluation.headline()


def test_openai_guide_example_passes_the_check_and_trains(tiny_model, tokenizer, tmp_path):
    report = check_data(str(GUIDE), tokenizer)
    assert not report.errors and report.stats["train"]["examples"] == 12
    values = {"data": str(GUIDE), "model": str(tiny_model), "method": "lora", "batch_tokens": 1024}
    values |= {"precision": "fp32", "max_steps": 4, "learning_rate": 1e-2, "eval_every": 1000}
    result = train(build_config(values), tmp_path / "run")
    losses = [r["loss"] for r in RunFolder(result.run_dir).read_metrics() if r.get("event") == "step"]
    assert result.final is not None and len(losses) == 4 and losses[-1] < losses[0]


def _ask(client, model, content, **options):
    values = {"temperature": 0, "max_tokens": 60, "tools": [WEATHER, TIME]} | options
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **values)


@pytest.mark.parametrize("name", list(ASKS))
def test_held_out_request_gets_the_right_call(tool_server, name):
    client, tuned = tool_server
    reply = _ask(client, tuned, ASKS[name][3])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == name and json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_calls_assemble_as_the_whole_answer(tool_server):
    client, tuned = tool_server
    reply = _ask(client, tuned, ASKS["get_time"][3], logprobs=True).choices[0]
    whole = reply.message.tool_calls
    stream = _ask(client, tuned, ASKS["get_time"][3], stream=True, logprobs=True)
    calls: dict[int, dict] = {}
    finish, logprobs = None, []
    for chunk in stream:
        logprobs += chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else []
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            got = calls.setdefault(delta_call.index, {"name": "", "arguments": ""})
            got["name"] += delta_call.function.name or ""
            got["arguments"] += delta_call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole
    ]
    # the tokens held back while the call was being written still send their log-probs
    assert [t.token for t in logprobs] == [t.token for t in reply.logprobs.content]


def test_tool_choice_none_gives_text_and_required_always_calls(tool_server):
    client, tuned = tool_server
    text = _ask(client, tuned, ASKS["get_weather"][0], tool_choice="none").choices[0]
    assert text.message.tool_calls is None and text.finish_reason in ("stop", "length")
    assert "<tool_call>" not in text.message.content
    for seed in range(4):  # a question that asks for no function, sampled: still a call, whole
        reply = _ask(client, tuned, "Tell me a story", tool_choice="required", temperature=1, seed=seed)
        assert reply.choices[0].finish_reason == "tool_calls"
        assert reply.choices[0].message.tool_calls[0].function.name in ASKS


def test_sampled_calls_never_break_a_nested_schema(tool_server):
    client, base = tool_server
    schema = ORDER["function"]["parameters"]
    made = 0
    for seed in range(10):
        reply = _ask(
            client,
            base,
            "Order something",
            tools=[ORDER],
            tool_choice="required",
            temperature=1,
            seed=seed,
            max_tokens=160,
        )
        choice = reply.choices[0]
        if choice.finish_reason == "length":
            continue
        made += 1
        for call in choice.message.tool_calls:
            assert call.function.name == "order"
            assert not list(Draft202012Validator(schema).iter_errors(json.loads(call.function.arguments)))
    assert made >= 5


def test_json_schema_response_format_always_matches(tool_server):
    client, base = tool_server
    schema = ORDER["function"]["parameters"]["properties"]["size"]
    form = {"type": "json_schema", "json_schema": {"name": "size", "schema": schema, "strict": True}}
    made = 0
    for seed in range(6):
        reply = client.chat.completions.create(
            model=base,
            messages=[{"role": "user", "content": "Size?"}],
            response_format=form,
            temperature=1,
            seed=seed,
            max_tokens=60,
        )
        if reply.choices[0].finish_reason == "stop":
            made += 1
            assert not list(Draft202012Validator(schema).iter_errors(json.loads(reply.choices[0].message.content)))
    assert made >= 3, reply.choices[0].message.content


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objectx"}}}]}, "tools"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 3}}}},
            "response_format",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
)
def test_a_bad_schema_is_a_400_naming_the_parameter(tool_server, options, param):
    client, base = tool_server
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=base, messages=[{"role": "user", "content": "hi"}], **options)
    assert caught.value.body["param"] == param


def test_distill_collect_keeps_the_teachers_calls(tool_server, tmp_path):
    """A teacher with tools (here the served tuned model) answers with calls; the answers file keeps them, with
    the functions, as tool data `tunesmith train` takes."""
    client, tuned = tool_server
    prompts = [{"messages": [{"role": "user", "content": ASKS[name][3]}], "tools": [WEATHER, TIME]} for name in ASKS]
    source = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    settings = CollectSettings(TeacherSettings(str(client.base_url), tuned), api_key=KEY, retries=0, timeout=60.0)
    summary = collect(str(source), tmp_path / "answers.jsonl", settings)
    assert summary.answered == 2 and not summary.failed
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    records = [FORMATS["chat"].parse(row) for row in rows]
    assert {r.messages[-1].tool_calls[0].name for r in records} == set(ASKS)
    assert all(r.tools[0].name == "get_weather" for r in records)


GO_OLLAMA = """package main

import (
\t"encoding/json"
\t"os"
\t"text/template"
)

// Ollama's shapes: tools and arguments print as compact JSON (their String methods), map keys sorted
type Args map[string]any

func (a Args) String() string { b, _ := json.Marshal(map[string]any(a)); return string(b) }

type Tool map[string]any

func (t Tool) String() string { b, _ := json.Marshal(map[string]any(t)); return string(b) }

type Function struct {
\tName      string `json:"name"`
\tArguments Args   `json:"arguments"`
}
type ToolCall struct {
\tFunction Function `json:"function"`
}
type Message struct {
\tRole      string     `json:"role"`
\tContent   string     `json:"content"`
\tToolCalls []ToolCall `json:"tool_calls"`
}
type Chat struct {
\tMessages []Message `json:"messages"`
\tTools    []Tool    `json:"tools"`
}

func main() {
\tsource, _ := os.ReadFile(os.Args[1])
\tvar chats []Chat
\tjson.NewDecoder(os.Stdin).Decode(&chats)
\ttmpl := template.Must(template.New("t").Parse(string(source)))
\tfor _, chat := range chats {
\t\tif err := tmpl.Execute(os.Stdout, map[string]any{"Messages": chat.Messages, "Tools": chat.Tools}); err != nil {
\t\t\tpanic(err)
\t\t}
\t\tos.Stdout.WriteString("\\x00")
\t}
}
"""


def _json_lines_canonical(text: str) -> str:
    """Each line that is a JSON object written compactly with sorted keys (Ollama's JSON differs in just that)."""
    out = []
    for line in text.split("\n"):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        out.append(json.dumps(value, sort_keys=True, separators=(",", ":")) if isinstance(value, dict) else line)
    return "\n".join(out)


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go's text/template (Debian golang-go)")
def test_ollama_template_renders_tools_calls_and_results_as_the_fallback(tokenizer, tmp_path):
    """The exported Modelfile of a model without tool support renders Ollama's tools, tool calls and tool messages
    as training and the server render them (the fallback), up to how Ollama writes JSON."""
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    chats = [
        {"messages": [{"role": "user", "content": "hi"}], "tools": []},
        {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER, TIME]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather and time in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": call}, {"function": call}]},
                {"role": "tool", "content": "20 degrees"},
                {"role": "tool", "content": "noon"},
                {"role": "assistant", "content": "20 degrees at noon."},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [WEATHER, TIME],
        },
    ]
    text = modelfile(tokenizer, "model.gguf")
    rendered = go_render(_template_of(text), chats, tmp_path, GO_OLLAMA)
    renderer = ChatRenderer(tokenizer)
    for chat, got in zip(chats, rendered, strict=True):
        record = FORMATS["chat"].parse(_openai_shape(chat))
        expected = renderer.prompt(record.messages[: len(chat["messages"])], tools=record.tools)
        assert _json_lines_canonical(got) == _json_lines_canonical(expected)


def _openai_shape(chat: dict) -> dict:
    """An Ollama chat as OpenAI's data (ids, arguments as JSON text), for the renderer."""
    messages, last_ids = [], []
    for m in chat["messages"]:
        if m.get("tool_calls"):
            last_ids = [f"c{i}" for i in range(len(m["tool_calls"]))]
            calls = [
                {
                    "id": i,
                    "type": "function",
                    "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])},
                }
                for i, c in zip(last_ids, m["tool_calls"])
            ]
            messages.append({"role": "assistant", "content": m["content"] or None, "tool_calls": calls})
        elif m["role"] == "tool":
            messages.append({"role": "tool", "content": m["content"], "tool_call_id": last_ids.pop(0)})
        else:
            messages.append(m)
    if messages[-1]["role"] != "assistant":
        messages.append({"role": "assistant", "content": "x"})  # parse_chat wants an answer; dropped below
    return {"messages": messages, "tools": chat["tools"] or None}


def test_dpo_trains_on_pairs_whose_preferred_answer_calls_a_function(adapter_base, tmp_path):
    """OpenAI's preference format with tools: the preferred side a call, the other a refusal; dpo learns it."""
    rows = []
    for ask in [a for asks in ASKS.values() for a in asks] * 2:
        call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": ask}], "tools": [WEATHER]},
                "preferred_output": [{"role": "assistant", "tool_calls": [call]}],
                "non_preferred_output": [{"role": "assistant", "content": "I cannot look that up."}],
            }
        )
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    values = {"data": str(data), "model": str(adapter_base), "method": "lora", "objective": "dpo"}
    values |= {"precision": "fp32", "max_steps": 4, "eval_every": 1000}
    result = train(build_config(values), tmp_path / "run")
    steps = [r for r in RunFolder(result.run_dir).read_metrics() if r.get("event") == "step"]
    assert abs(steps[0]["loss"] - 0.6931) < 1e-3  # the policy starts as its reference
    assert steps[-1]["loss"] < steps[0]["loss"] and steps[-1]["reward_accuracy"] > 0.5
