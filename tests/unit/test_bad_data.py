"""Bad input is refused with one clear line, never a traceback: the corpus in tests/data/bad/ and fuzzed bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.data.validate import read_dataset
from tunesmith.errors import DataError

BAD = Path(__file__).resolve().parent.parent / "data" / "bad"
EXPECTED = json.loads((BAD / "EXPECTED.json").read_text())


def _check(path: Path) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, ["data", "check", str(path), "--json", "--no-estimate"])
    return result.exit_code, result.output, result.exception


def _first_problem(path: Path) -> tuple[str, int, str]:
    """(file, line, code) of the first error, from the JSON report or the one-line error."""
    code, output, exception = _check(path)
    assert code == 2 and isinstance(exception, SystemExit) and "Traceback" not in output, output
    if output.startswith("error: "):  # the file as a whole cannot be read: exactly one line
        assert output.count("\n") == 1, output
        return str(path), 0, output.rsplit("[", 1)[1].split("]", 1)[0]
    first = json.loads(output)["errors"][0]
    return first["file"], first["line"], first["code"]


def test_the_corpus_has_forty_bad_files_each_with_its_expected_error():
    files = sorted(p.name for p in BAD.iterdir() if p.name != "EXPECTED.json")
    assert len(EXPECTED) >= 40 and files == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_gives_exit_2_and_names_its_file_line_and_code(name):
    file, line, code = _first_problem(BAD / name)
    assert (line, code) == tuple(EXPECTED[name]) and file.endswith(name)


def test_a_50_mb_line_an_empty_folder_and_a_symlink_loop_are_refused_clearly(tmp_path):
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"messages": [{"role": "user", "content": "' + "a" * 50_000_000 + "\n")  # never closed
    assert _first_problem(huge)[1:] == (1, "invalid_json")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _first_problem(empty)[1:] == (0, "empty_folder")
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert _first_problem(tmp_path / "a")[1:] == (0, "broken_link")


SUFFIXES = [".jsonl", ".json", ".csv", ".txt"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400), st.sampled_from(SUFFIXES))
@example(b"\r\x00", ".csv")  # a lone carriage return: the csv module's own error, once let through
def test_arbitrary_bytes_are_read_or_refused_with_a_data_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"d{suffix}"
    path.write_bytes(data)
    try:
        dataset = read_dataset(str(path))
    except DataError as exc:
        assert exc.code and str(path) in exc.message
        return
    assert all(p.code and p.line >= 0 for p in dataset.errors)
    assert len(dataset.records) + len(dataset.errors) >= 1


PIECES = st.sampled_from(['{"', '"}', "[", "]", ",", ":", '"messages"', '"role"', '"content"', '"user"',
                          '"assistant"', '"text"', '"prompt"', '"completion"', "null", "1", "\n", "\r\n", "\ufeff",
                          "\x00", "é", '"chosen"', '"rejected"', '"conversations"', '"from"', '"value"'])  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PIECES, max_size=60), st.sampled_from(SUFFIXES))
def test_json_like_fragments_are_read_or_refused_with_a_data_error(tmp_path_factory, pieces, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"d{suffix}"
    path.write_text("".join(pieces), encoding="utf-8")
    try:
        dataset = read_dataset(str(path))
    except DataError as exc:
        assert exc.code
        return
    assert all(p.code for p in dataset.errors)
