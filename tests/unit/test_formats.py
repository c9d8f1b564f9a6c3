"""Every input format parses; every fault gets its code and its line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import chat, write_jsonl
from tunesmith.data.formats import RecordError, parse_prompt
from tunesmith.data.schema import Conversation, Message, PreferencePair, TextDoc
from tunesmith.data.validate import read_dataset
from tunesmith.errors import DataError

GOOD = [chat(i) for i in range(10)]

# One fixture per error code: a bad line, and the code it must get.
FAULTS = [
    ('["not", "an", "object"]', "data_type"),
    ({"msgs": []}, "missing_messages_list"),
    ({"messages": []}, "missing_messages_list"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "message_missing_key"),
    (
        {"messages": [{"role": "user", "content": "q", "mood": "x"}, {"role": "assistant", "content": "a"}]},
        "message_unrecognized_key",
    ),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "asistant", "content": "a"}]}, "unrecognized_role"),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": "q"}]}, "example_missing_assistant_message"),
    (
        {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
        "invalid_weight",
    ),
    (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]},
        "invalid_weight",
    ),
    ('{"messages": [', "invalid_json"),
]


@pytest.mark.parametrize(("line", "code"), FAULTS)
def test_each_fault_gets_its_code_and_line(tmp_path, line, code):
    data = read_dataset(str(write_jsonl(tmp_path / "d.jsonl", [*GOOD, line])))
    assert [(e.line, e.code) for e in data.errors] == [(11, code)]
    assert len(data.records) == 10


def test_encoding_error_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, GOOD)
    with path.open("ab") as handle:
        handle.write(b'{"messages": "\xff\xfe"}\n')
    assert [(e.line, e.code) for e in read_dataset(str(path)).errors] == [(11, "encoding")]


def test_empty_file_is_an_error_and_a_few_examples_read_fine(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert [e.code for e in read_dataset(str(empty)).errors] == ["empty_file"]
    few = read_dataset(str(write_jsonl(tmp_path / "few.jsonl", GOOD[:3])))  # too few to train on: see test_check
    assert few.errors == [] and len(few.records) == 3


def test_no_known_format_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no example has the fields of a known format"):
        read_dataset(str(write_jsonl(tmp_path / "d.jsonl", [{"q": 1}] * 10)))


def test_duplicates_are_warnings_naming_the_first(tmp_path):
    data = read_dataset(str(write_jsonl(tmp_path / "d.jsonl", [*GOOD, GOOD[2]])))
    assert [(w.line, w.code, w.message) for w in data.warnings] == [(11, "duplicate", "repeats line 3 exactly")]


def _first(tmp_path, rows, name="d.jsonl"):
    data = read_dataset(str(write_jsonl(tmp_path / name, rows * 10)))
    assert not data.errors, data.errors
    return data.format, data.records[0][1]


def test_openai_chat_with_weights(tmp_path):
    fmt, record = _first(
        tmp_path,
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello", "weight": 0},
                    {"role": "user", "content": "Bye"},
                    {"role": "assistant", "content": "Bye!", "weight": 1},
                ]
            }
        ],
    )
    assert fmt == "chat"
    assert record.messages[2] == Message("assistant", "Hello", 0)


def test_prompt_completion_strings_and_messages(tmp_path):
    fmt, record = _first(tmp_path, [{"prompt": "Q?", "completion": "A."}])
    assert fmt == "prompt-completion"
    assert record == Conversation((Message("user", "Q?"), Message("assistant", "A.")))
    _, record = _first(
        tmp_path,
        [
            {
                "prompt": [
                    {"role": "user", "content": "Q?"},
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "Again?"},
                ],
                "completion": [{"role": "assistant", "content": "A."}],
            }
        ],
        "m.jsonl",
    )
    assert record.messages[1].weight == 0  # earlier assistant turns in a prompt are not trained
    assert record.messages[-1] == Message("assistant", "A.")


def test_alpaca(tmp_path):
    fmt, record = _first(tmp_path, [{"instruction": "Translate", "input": "chat", "output": "cat"}])
    assert fmt == "alpaca"
    assert record == Conversation((Message("user", "Translate\n\nchat"), Message("assistant", "cat")))


def test_sharegpt(tmp_path):
    fmt, record = _first(
        tmp_path,
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}], "system": "Be kind."}],
    )
    assert fmt == "sharegpt"
    assert [m.role for m in record.messages] == ["system", "user", "assistant"]


def test_sharegpt_bad_speaker(tmp_path):
    rows = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": f"Yo {i}"}]} for i in range(10)
    ]
    rows.append({"conversations": [{"from": "robot", "value": "Hi"}]})
    data = read_dataset(str(write_jsonl(tmp_path / "s.jsonl", rows)))
    assert [(e.line, e.code) for e in data.errors] == [(11, "unrecognized_role")]


def test_text_jsonl_and_txt_files(tmp_path):
    fmt, record = _first(tmp_path, [{"text": "Some document."}])
    assert (fmt, record) == ("text", TextDoc("Some document."))
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.txt").write_text(f"Document {i}.\nSecond line.")
    data = read_dataset(str(folder))
    assert data.format == "text" and len(data.records) == 10 and not data.errors


def test_preference_shapes(tmp_path):
    fmt, record = _first(tmp_path, [{"prompt": "Q?", "chosen": "Good.", "rejected": "Bad."}])
    assert (fmt, record) == ("preference", PreferencePair((Message("user", "Q?"),), "Good.", "Bad."))
    fmt, record = _first(
        tmp_path,
        [
            {
                "input": {"messages": [{"role": "user", "content": "Q?"}]},
                "preferred_output": [{"role": "assistant", "content": "Good."}],
                "non_preferred_output": [{"role": "assistant", "content": "Bad."}],
            }
        ],
        "o.jsonl",
    )
    assert (fmt, record) == ("openai-preference", PreferencePair((Message("user", "Q?"),), "Good.", "Bad."))


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\n" + "".join(f'"What is {i}?","It is {i}."\n' for i in range(10)))
    data = read_dataset(str(path), columns={"prompt": "question", "completion": "answer"})
    assert data.format == "prompt-completion" and not data.errors
    assert data.records[0] == (2, Conversation((Message("user", "What is 0?"), Message("assistant", "It is 0."))))
    with pytest.raises(DataError, match="column 'query' is not in the header"):
        read_dataset(str(path), columns={"prompt": "query"})


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(GOOD, indent=1))
    data = read_dataset(str(path))
    assert data.format == "chat" and len(data.records) == 10


def test_local_parquet_folder_reads_like_a_hub_dataset(tmp_path):
    import datasets

    folder = tmp_path / "hub-like"
    folder.mkdir()
    datasets.Dataset.from_list([{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(12)]).to_parquet(
        str(folder / "train.parquet")
    )
    data = read_dataset(str(folder))
    assert data.format == "prompt-completion" and len(data.records) == 12 and not data.errors


def test_unreachable_hub_dataset_is_one_clear_error():
    with pytest.raises(DataError, match="could not load as a data set"):
        read_dataset("no-such-org-xyz/no-such-set")


def test_json_array_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode())
    data = read_dataset(str(path))
    assert data.format == "chat" and len(data.records) == 10 and not data.errors


def test_public_api_is_importable():
    import tunesmith

    assert tunesmith.read_dataset is read_dataset
    assert callable(tunesmith.check_data) and callable(tunesmith.load_model)


@pytest.mark.parametrize(
    ("value", "messages"),
    [
        ("Summarise this call.", [("user", "Summarise this call.")]),
        ({"prompt": "Hi"}, [("user", "Hi")]),
        (
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
            [("system", "Be brief."), ("user", "Hi")],
        ),
    ],
)
def test_a_prompt_for_a_teacher_is_a_string_a_prompt_field_or_messages_before_the_answer(value, messages):
    assert [(m.role, m.content) for m in parse_prompt(value).messages] == messages


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("  ", "missing_content"),
        (7, "data_type"),
        ({"question": "Hi"}, "unrecognized_prompt"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "prompt_has_answer"),
        ({"messages": []}, "missing_messages_list"),
    ],
)
def test_a_prompt_that_is_not_one_says_why(value, code):
    with pytest.raises(RecordError) as caught:
        parse_prompt(value)
    assert caught.value.code == code
