"""Writes tests/data/bad/: malformed data files, each with the first problem `data check` must report.

    .venv/bin/python tests/data/make_bad.py

EXPECTED maps each file to (line, code) of its first error (line 0: the file as a whole). Files too large or too odd
to keep in git (a 50 MB line, an empty folder, a symlink loop) are made by the test itself.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

BAD = Path(__file__).with_name("bad")


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}


def _lines(*bad: object, good: int = 3) -> bytes:
    """`good` valid chat lines, then the bad ones (objects as JSON, bytes and str as they are)."""
    rows = [json.dumps(_chat(i)).encode() for i in range(good)]
    for item in bad:
        rows.append(
            item if isinstance(item, bytes) else item.encode() if isinstance(item, str) else json.dumps(item).encode()
        )
    return b"\n".join(rows) + b"\n"


def _message(**fields: object) -> dict:
    return {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello.", **fields}]}


def _parquet(rows: dict[str, list]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(rows), buffer)
    return buffer.getvalue()


FILES: dict[str, tuple[bytes, int, str]] = {
    # encodings and bytes
    "truncated_utf8.jsonl": (_lines(b'{"messages": [{"role": "user", "content": "caf\xc3'), 4, "encoding"),
    "latin1.jsonl": (_lines('{"text": "café"}'.encode("latin-1")), 4, "encoding"),
    "nul_bytes.jsonl": (_lines(b'{"messages": [{"role": "user", "content": "a\x00b"}]}'), 4, "invalid_json"),
    "binary_garbage.jsonl": (bytes(range(256)) * 4, 1, "invalid_json"),  # line 1 is bytes 0-9: UTF-8, not JSON
    "bom_then_broken.jsonl": (b"\xef\xbb\xbf{broken\n" + _lines(good=3), 1, "invalid_json"),
    "bom_in_the_middle.jsonl": (_lines(b"\xef\xbb\xbf" + json.dumps(_chat(9)).encode()), 4, "invalid_json"),
    "crlf_bad_role.jsonl": (
        _lines(_message(role="asistant")).replace(b"\n", b"\r\n"),
        4,
        "unrecognized_role",
    ),
    "latin1.txt": ("Le café est chaud.".encode("latin-1"), 1, "encoding"),
    # JSON that is not JSON
    "trailing_comma.jsonl": (_lines('{"messages": [],}'), 4, "invalid_json"),
    "single_quotes.jsonl": (_lines("{'messages': []}"), 4, "invalid_json"),
    "deeply_nested.jsonl": (_lines("[" * 100_000 + "]" * 100_000), 4, "invalid_json"),
    "half_a_line.jsonl": (_lines('{"messages": [{"role": "user", "con'), 4, "invalid_json"),
    # wrong types at every level
    "line_is_array.jsonl": (_lines([1, 2]), 4, "data_type"),
    "line_is_string.jsonl": (_lines(json.dumps("just text")), 4, "data_type"),
    "line_is_number.jsonl": (_lines(42), 4, "data_type"),
    "line_is_null.jsonl": (_lines(None), 4, "data_type"),
    "messages_is_string.jsonl": (_lines({"messages": "hello"}), 4, "missing_messages_list"),
    "messages_empty.jsonl": (_lines({"messages": []}), 4, "missing_messages_list"),
    "message_is_string.jsonl": (_lines({"messages": ["hello", "there"]}), 4, "data_type"),
    "role_is_number.jsonl": (_lines(_message(role=5)), 4, "unrecognized_role"),
    "role_misspelt.jsonl": (_lines(_message(role="asistant")), 4, "unrecognized_role"),
    "content_is_number.jsonl": (_lines(_message(content=42)), 4, "missing_content"),
    "content_is_null.jsonl": (_lines(_message(content=None)), 4, "missing_content"),
    "content_is_empty.jsonl": (_lines(_message(content="  ")), 4, "missing_content"),
    "message_without_role.jsonl": (
        _lines({"messages": [{"content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}),
        4,
        "message_missing_key",
    ),
    "message_unknown_key.jsonl": (_lines(_message(mood="happy")), 4, "message_unrecognized_key"),
    "weight_is_two.jsonl": (_lines(_message(weight=2)), 4, "invalid_weight"),
    "weight_is_true.jsonl": (_lines(_message(weight=True)), 4, "invalid_weight"),
    "no_assistant.jsonl": (
        _lines({"messages": [{"role": "user", "content": "Hi?"}]}),
        4,
        "example_missing_assistant_message",
    ),
    "infinity.jsonl": (_lines('{"messages": [{"role": "user", "content": Infinity}]}'), 4, "missing_content"),
    # other formats, broken
    "prompt_is_number.jsonl": (
        b"\n".join([json.dumps({"prompt": f"P{i}", "completion": "C"}).encode() for i in range(3)])
        + b'\n{"prompt": 7, "completion": "C"}\n',
        4,
        "field_type",
    ),
    "completion_missing.jsonl": (
        b"\n".join([json.dumps({"prompt": f"P{i}", "completion": "C"}).encode() for i in range(3)])
        + b'\n{"prompt": "P", "answer": "C"}\n',
        4,
        "missing_field",
    ),
    "mixed_formats.jsonl": (_lines({"prompt": "P", "completion": "C"}, {"text": "plain"}), 4, "missing_messages_list"),
    "text_is_number.jsonl": (b'{"text": "one"}\n{"text": 2}\n{"text": "three"}\n', 2, "field_type"),
    "sharegpt_bad_from.jsonl": (
        b'{"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Hello"}]}\n',
        1,
        "unrecognized_role",
    ),
    # files as a whole
    "empty.jsonl": (b"", 0, "empty_file"),
    "blank_lines.jsonl": (b"\n\n   \n\n", 0, "empty_file"),
    "unknown_fields.jsonl": (b'{"question": "Q", "answer": "A"}\n' * 12, 0, "unknown_format"),
    "not_an_array.json": (b'"just a string"\n', 1, "data_type"),
    "array_with_a_number.json": (json.dumps([_chat(0), 5, _chat(1)]).encode(), 2, "data_type"),
    "broken_array.json": (b'[{"messages": []},\n{"mess', 2, "invalid_json"),
    "unknown_type.xml": (b"<messages/>", 0, "unknown_file_type"),
    "missing_column.csv": (b"prompt,answer\nP1,A1\nP2,A2\n", 0, "unknown_format"),
    "short_row.csv": (b"prompt,completion\nP1,C1\nP2\nP3,C3\n", 3, "missing_field"),
    "latin1.csv": ("prompt,completion\ncafé,crème\n".encode("latin-1"), 2, "encoding"),
    "wrong_schema.parquet": (_parquet({"a": [1, 2], "b": ["x", "y"]}), 0, "unknown_format"),
    "messages_as_string.parquet": (_parquet({"messages": ["hi", "there"]}), 1, "missing_messages_list"),
}


def main() -> None:
    BAD.mkdir(exist_ok=True)
    for old in BAD.iterdir():
        old.unlink()
    for name, (data, _, _) in FILES.items():
        (BAD / name).write_bytes(data)
    expected = {name: [line, code] for name, (_, line, code) in FILES.items()}
    (BAD / "EXPECTED.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
