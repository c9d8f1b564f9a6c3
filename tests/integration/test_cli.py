"""The command line: exit codes, one-line errors, JSON output, the token view."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.conftest import TWENTY_FAULTS, chat, write_jsonl
from tunesmith.cli import app
from tunesmith.data.schema import Conversation, Message
from tunesmith.tokenize.encode import encode
from tunesmith.tokenize.marks import marks

runner = CliRunner()


def test_check_clean_file_exits_0(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(12)])
    result = runner.invoke(app, ["data", "check", str(path), "--no-estimate"])
    assert result.exit_code == 0, result.output
    assert "ready to train" in result.output and "supervised tokens" in result.output


def test_check_json_lists_every_fault(tmp_path, tokenizer):
    rows, expected = [], []
    for i, (fault, code) in enumerate(TWENTY_FAULTS):
        rows += [chat(i), fault]
        expected.append({"line": len(rows), "code": code})
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = runner.invoke(app, ["data", "check", str(path), "--json", "--no-estimate"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert [{"line": e["line"], "code": e["code"]} for e in report["errors"]] == expected
    assert report["warnings"] == []


def test_check_estimates_training_time(tmp_path, home, tiny_model):
    """The estimate times real training steps of the model named (a tiny one here: the same code, in seconds)."""
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(12)])
    result = runner.invoke(app, ["data", "check", str(path), "--model", str(tiny_model), "--json"])
    training = json.loads(result.stdout)["stats"]["training"]
    assert training["tokens_per_second"] > 0 and training["estimated_seconds"] > 0


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["data", "check", str(tmp_path / "missing.jsonl"), "--no-estimate"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "missing.jsonl: no such file or folder" in result.output
    bad_model = runner.invoke(app, ["data", "check", str(tmp_path / "x.jsonl"), "--model", "nope"])
    assert bad_model.exit_code == 2 and "model 'nope' not found" in bad_model.output


def test_a_bad_flag_fails_before_the_model_loads_or_the_speed_is_measured(home):
    bad_columns = runner.invoke(app, ["data", "check", "x.csv", "--columns", "prompt"])
    assert bad_columns.exit_code == 2 and "is not field=column" in bad_columns.output
    assert not (home / "throughput.json").exists() and not (home / "models").exists()


def test_show_marks_each_end_of_turn_trained(tmp_path, tokenizer):
    conversation = Conversation(
        (
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            Message("user", "Bye"),
            Message("assistant", "Goodbye!"),
        )
    )
    example = encode([(1, conversation)], tokenizer, max_length=512).examples[0]
    trained = [p.text for p in marks(example, tokenizer) if p.trained]
    assert trained == ["Hello!<|im_end|>", "Goodbye!<|im_end|>"]
    path = write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(3)])
    result = runner.invoke(app, ["data", "show", str(path), "-n", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.output.count("0 + 0 is 0.<|im_end|>") == 1 and "1 + 1 is 2.<|im_end|>" in result.output
    assert "2 trained" not in result.output and "trained" in result.output


def test_models_list_shows_default(tokenizer):
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "smollm2-135m-instruct" in result.output and "embedded" in result.output


def test_show_highlights_the_end_of_turn_tokens(tokenizer):
    from rich.console import Console

    from tunesmith.cli.show import print_example

    conversation = Conversation((Message("user", "Hi"), Message("assistant", "Hello!")))
    example = encode([(1, conversation)], tokenizer, max_length=512).examples[0]
    console = Console(record=True, width=200, force_terminal=True, color_system="truecolor")
    print_example(console, "d.jsonl", example, tokenizer)
    html = console.export_html(inline_styles=True)
    trained = [s for s in html.split("<span ") if "background-color: #008000" in s]
    assert any("Hello!&lt;|im_end|&gt;" in s for s in trained)
    assert not any("Hi&lt;|im_end|&gt;" in s for s in trained)
