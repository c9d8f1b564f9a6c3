"""check_data: every fault with its line and code and nothing else; warnings; statistics."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import TWENTY_FAULTS, chat, prose, write_jsonl
from tunesmith.check import DataOptions, check_data
from tunesmith.cli import app
from tunesmith.data import validate
from tunesmith.data.advice import advise
from tunesmith.data.digests import repeats


def test_twenty_mixed_faults_each_reported_with_line_and_code_and_nothing_else(tmp_path, tokenizer):
    rows, expected = [], []
    for i, (fault, code) in enumerate(TWENTY_FAULTS):
        rows += [chat(i), fault]
        expected.append((len(rows), code))
    report = check_data(str(write_jsonl(tmp_path / "mixed.jsonl", rows)), tokenizer)
    assert [(e.line, e.code) for e in report.errors] == expected
    assert report.warnings == []
    assert report.stats["train"]["examples"] == 20


def test_clean_data_statistics(tmp_path, tokenizer):
    report = check_data(
        str(write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(40)])), tokenizer, tokens_per_second=1000.0
    )
    assert report.ok
    stats = report.stats["train"]
    lengths = [len(tokenizer.apply_chat_template(chat(i)["messages"], tokenize=True)["input_ids"]) for i in range(40)]
    assert stats["tokens"] == sum(lengths)
    assert stats["length_max"] == max(lengths)
    assert stats["length_p10"] <= stats["length_p50"] <= stats["length_p90"] <= stats["length_max"]
    assert 0 < stats["supervised_tokens"] < stats["tokens"]
    assert report.stats["training"]["epochs"] == 3
    assert report.stats["training"]["estimated_seconds"] == round(sum(lengths) * 3 / 1000.0, 1)
    bars = stats["length_histogram"]
    assert sum(bars["counts"]) == 40 and len(bars["edges"]) == len(bars["counts"]) + 1
    assert bars["edges"][0] == min(lengths) and bars["edges"][-1] == max(lengths)
    expected, _ = np.histogram(lengths, bins=np.array(bars["edges"]))
    assert bars["counts"] == expected.tolist()


def test_the_check_names_the_objective_auto_follows_and_its_learning_rates(tmp_path, tokenizer):
    pairs = [{"prompt": f"Say {i}", "chosen": f"Gladly: {i}!", "rejected": f"{i}."} for i in range(30)]
    for rows, objective in ((pairs, "dpo"), ([chat(i) for i in range(30)], "sft")):
        training = check_data(str(write_jsonl(tmp_path / f"{objective}.jsonl", rows)), tokenizer, width=576)
        assert training.stats["training"]["objective"] == objective
        assert training.stats["training"]["learning_rates"]["lora"] == (1.8e-4 if objective == "dpo" else 1.8e-3)


def test_the_check_suggests_the_objective_by_shape_and_the_method_by_size(tmp_path, tokenizer):
    pairs = [{"prompt": f"Say {i}", "chosen": f"Gladly: {i}!", "rejected": f"{i}."} for i in range(30)]
    texts = [{"text": prose(200, seed=i)} for i in range(30)]
    for rows, objective in ((pairs, "dpo"), (texts, "text"), ([chat(i) for i in range(300)], "sft")):
        report = check_data(str(write_jsonl(tmp_path / f"{objective}.jsonl", rows)), tokenizer, width=576)
        advice = report.stats["training"]["advice"]
        assert (advice["objective"], advice["method"]) == (objective, "lora")
        assert advice["reasons"][0].startswith(f"objective {objective}: ")
        few = any(r.startswith("30 examples: enough to teach a format or a tone") for r in advice["reasons"])
        assert few == (objective != "sft")  # 300 conversations are not few
    big = advise("chat", 200_000, 30_000_000)
    assert big.method == "full" and "30,000,000 trained tokens" in big.reasons[1]


def test_data_check_of_a_mix_checks_each_source_and_shows_its_share_of_an_epoch(tmp_path):
    qa = write_jsonl(tmp_path / "qa.jsonl", [chat(i) for i in range(60)])
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": prose(60, seed=i)} for i in range(30)])
    args = ["data", "check", f"{qa}:1", f"{docs}:3@text", "--no-estimate", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [r["stats"]["train"]["format"] for r in shown["sources"]] == ["chat", "text"]
    assert [row["examples_per_epoch"] for row in shown["mix"]] == [23, 67]  # 90 rows, 1:3 (each source unsplit)
    assert shown["mix"][1]["token_share"] > 75
    bad = CliRunner().invoke(app, ["data", "check", f"{qa}:1", str(docs), "--no-estimate"])
    assert bad.exit_code == 2 and "has no weight while other sources have one" in bad.output


def test_the_first_examples_are_those_training_makes_first(tmp_path, tokenizer):
    from tunesmith.check import prepare_data

    path = str(write_jsonl(tmp_path / "d.jsonl", [{"bad": 1}] + [chat(i) for i in range(30)]))
    first = DataOptions().first(path, tokenizer, 3)
    every = prepare_data(path, tokenizer, DataOptions()).train
    assert [e.line for e in first] == [2, 3, 4]
    assert all(a.input_ids.tolist() == b.input_ids.tolist() for a, b in zip(first, every[:3], strict=True))
    assert all(a.labels.tolist() == b.labels.tolist() for a, b in zip(first, every[:3], strict=True))


def test_overlap_and_length_warnings(tmp_path, tokenizer):
    train = [chat(i) for i in range(10)]
    train.append(
        {"messages": [{"role": "user", "content": "tell me " * 100}, {"role": "assistant", "content": "sure " * 100}]}
    )
    evaluation = [chat(3), *[chat(i) for i in range(100, 110)]]
    report = check_data(
        str(write_jsonl(tmp_path / "t.jsonl", train)),
        tokenizer,
        DataOptions(max_length=128),
        eval_source=str(write_jsonl(tmp_path / "e.jsonl", evaluation)),
    )
    assert report.ok
    codes = {(w.file.split("/")[-1], w.line, w.code) for w in report.warnings}
    assert codes == {("t.jsonl", 11, "too_long"), ("e.jsonl", 1, "eval_overlap")}
    too_long = next(w for w in report.warnings if w.code == "too_long")
    assert str(report.stats["train"]["length_max"]) in too_long.message


def test_report_json_shape(tmp_path, tokenizer):
    report = check_data(str(write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(9)] + ["{"])), tokenizer)
    data = json.loads(json.dumps(report.as_dict()))
    assert set(data) == {"errors", "warnings", "stats", "error_count"}
    assert {"line": 10, "code": "invalid_json"}.items() <= data["errors"][0].items()
    assert data["errors"][1]["code"] == "too_few_examples"
    assert data["error_count"] == 2 and data["stats"]["train"]["errors"] == 1


def test_problems_past_the_limit_are_counted_not_listed(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(validate, "PROBLEM_LIMIT", 5)
    rows = [chat(i) for i in range(12)] + ["{"] * 8 + [chat(3)] * 7
    report = check_data(str(write_jsonl(tmp_path / "d.jsonl", rows)), tokenizer)
    errors = [(p.line, p.code) for p in report.errors]
    assert errors == [
        (13, "invalid_json"),
        (14, "invalid_json"),
        (15, "invalid_json"),
        (16, "invalid_json"),
        (17, "invalid_json"),
        (0, "not_listed"),
    ]
    assert "3 more" in report.errors[-1].message and report.error_count == 8
    assert [(p.line, p.code) for p in report.warnings][-1] == (0, "not_listed")
    assert [p.message for p in report.warnings[:5]] == ["repeats line 4 exactly"] * 5
    assert report.stats["train"]["warnings"] == 7 and report.stats["train"]["examples"] == 19


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["messages", "role", "content", "weight", "prompt", "completion", "text", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(JSON | st.text(max_size=30), min_size=1, max_size=8))
def test_no_crash_on_arbitrary_json_lines(tmp_path_factory, tokenizer, lines):
    rows = [chat(i) for i in range(10)] + [json.dumps(v) if not isinstance(v, str) else v for v in lines]
    path = write_jsonl(tmp_path_factory.mktemp("fuzz") / "d.jsonl", rows)
    report = check_data(str(path), tokenizer)
    assert all(e.line > 10 or e.line == 0 for e in report.errors)
    assert report.stats["train"]["examples"] >= 10


def test_too_few_counts_what_is_trained_on_conversations_or_windows_of_text(tmp_path, tokenizer):
    few = check_data(str(write_jsonl(tmp_path / "few.jsonl", [chat(i) for i in range(3)])), tokenizer)
    assert [(e.line, e.code, e.message) for e in few.errors] == [
        (0, "too_few_examples", "3 usable examples; at least 10 are needed")
    ]
    one_file = tmp_path / "writings.txt"
    one_file.write_text(prose(6000), encoding="utf-8")  # one text, cut into windows of 256 tokens
    report = check_data(str(one_file), tokenizer, DataOptions(max_length=256, supervise="all"))
    assert report.ok and report.stats["train"]["examples"] == 1 and report.stats["train"]["rows"] >= 10
    short = check_data(str(one_file), tokenizer, DataOptions(max_length=4096, supervise="all"))
    assert [e.code for e in short.errors] == ["too_few_examples"]
    assert "training windows of up to 4096 tokens in 1 texts" in short.errors[0].message
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "a.txt").write_text(prose(6000), encoding="utf-8")
    long_records = write_jsonl(tmp_path / "long.jsonl", [{"text": prose(2000, seed=i)} for i in range(3)])
    for source in (folder, long_records):
        assert check_data(str(source), tokenizer, DataOptions(max_length=256, supervise="all")).ok, source


def test_a_check_in_small_chunks_reports_what_one_pass_reports(tmp_path, tokenizer, monkeypatch):
    rows = [chat(i) for i in range(30)] + ["{", [1]] + [chat(2), chat(29)] + [c for c, _ in TWENTY_FAULTS[:6]]
    train = str(write_jsonl(tmp_path / "t.jsonl", rows))
    held_out = str(write_jsonl(tmp_path / "e.jsonl", [chat(40), chat(7), chat(41)]))
    whole = check_data(train, tokenizer, DataOptions(max_length=40), eval_source=held_out).as_dict()
    monkeypatch.setattr(validate, "CHUNK", 3)
    monkeypatch.setattr(validate, "DETECT_SAMPLE", 2)
    assert check_data(train, tokenizer, DataOptions(max_length=40), eval_source=held_out).as_dict() == whole
    assert {(w["line"], w["code"]) for w in whole["warnings"]} >= {
        (33, "duplicate"),
        (34, "duplicate"),
        (2, "eval_overlap"),
    }


@given(st.lists(st.integers(0, 5), max_size=40))
def test_repeats_pairs_each_later_copy_with_the_first(values):
    keys = np.array(values, dtype=np.uint64)
    expected = [(i, values.index(v)) for i, v in enumerate(values) if values.index(v) < i]
    assert repeats(keys) == expected
