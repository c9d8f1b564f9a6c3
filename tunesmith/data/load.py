"""Files and hub data sets -> rows of (line number, JSON-like object), with per-line read errors."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tunesmith.errors import DataError

JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
TABLE_SUFFIXES = {".parquet", ".arrow"}
TOO_DEEP = "invalid JSON: nested too deeply to be an example"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of input: its object, or the reason it could not be read."""

    line: int
    """1-based line (JSONL), row (CSV: the header is line 1), or record number (parquet, hub)."""
    value: Any = None
    """The parsed object when reading worked."""
    code: str = ""
    """Error code when reading failed (invalid_json, encoding)."""
    message: str = ""
    """What went wrong when reading failed."""


def _decode(raw: bytes, line: int) -> tuple[str | None, Row | None]:
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8"), None
    except UnicodeDecodeError as exc:
        return None, Row(line, code="encoding", message=f"not UTF-8 at byte {exc.start}: re-save the file as UTF-8")


def _json_lines(path: Path) -> Iterator[Row]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text, bad = _decode(raw, number)
            if bad is not None:
                yield bad
                continue
            assert text is not None
            if not text.strip():
                continue
            try:
                yield Row(number, json.loads(text))
            except json.JSONDecodeError as exc:
                yield Row(number, code="invalid_json", message=f"invalid JSON: {exc.msg} at column {exc.colno}")
            except RecursionError:
                yield Row(number, code="invalid_json", message=TOO_DEEP)


def _json_array(path: Path, text: str) -> Iterator[Row]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        yield Row(exc.lineno, code="invalid_json", message=f"invalid JSON: {exc.msg} at column {exc.colno}")
        return
    except RecursionError:
        yield Row(1, code="invalid_json", message=TOO_DEEP)
        return
    if not isinstance(items, list):
        yield Row(1, code="data_type", message="a .json file must hold one array of examples, or use JSON Lines")
        return
    for number, item in enumerate(items, start=1):
        yield Row(number, item)


def _json_file(path: Path) -> Iterator[Row]:
    with path.open("rb") as handle:
        head = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
    if path.suffix == ".json" and head.startswith(b"["):
        text, bad = _decode(path.read_bytes(), 1)
        yield from ([bad] if bad else _json_array(path, text or ""))
    else:
        yield from _json_lines(path)


class _BadLine(Exception):
    def __init__(self, row: Row) -> None:
        self.row = row


def _decoded_lines(handle: IO[bytes]) -> Iterator[str]:
    """The lines of a file as text, for the csv module; a line that is not UTF-8 stops the reading with its row."""
    for number, raw in enumerate(handle, start=1):
        text, bad = _decode(raw, number)
        if bad is not None:
            raise _BadLine(bad)
        yield text or ""


def _csv_rows(path: Path, columns: Mapping[str, str]) -> Iterator[Row]:
    with path.open("rb") as handle:
        reader = csv.DictReader(_decoded_lines(handle))
        try:
            header = reader.fieldnames or []
            missing = [c for c in columns.values() if c not in header]
            if missing:
                raise DataError(
                    f"{path}: column {missing[0]!r} is not in the header ({', '.join(header)})",
                    hint="fix --columns, e.g. --columns prompt=question,completion=answer",
                    code="missing_column",
                )
            for row in reader:
                yield Row(reader.line_num, remap(row, columns))
        except _BadLine as exc:
            yield exc.row
        except csv.Error as exc:  # e.g. a lone carriage return inside a field
            raise DataError(
                f"{path}:{reader.line_num or 1}: not readable as CSV ({exc})",
                hint="quote fields that hold line breaks, or give the data as JSONL",
                code="invalid_csv",
            ) from None


def remap(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """Rename columns to a format's fields: columns maps field -> column; other columns stay as they are."""
    if not columns:
        return dict(row)
    taken = set(columns.values())
    out = {k: v for k, v in row.items() if k not in taken}
    out.update({field: row[column] for field, column in columns.items()})
    return out


def _table_rows(source: str, columns: Mapping[str, str], split: str) -> Iterator[Row]:
    import datasets

    path = Path(source)
    try:
        if path.is_file():
            kind = "parquet" if path.suffix == ".parquet" else "arrow"
            table = datasets.load_dataset(kind, data_files=str(path), split="train")
        else:
            table = datasets.load_dataset(source, split=split)
    except Exception as exc:
        raise DataError(
            f"{source}: could not load as a data set ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            hint="pass a local file or folder, or check the data set id and your network",
            code="load_failed",
        ) from exc
    for number, row in enumerate(table, start=1):
        yield Row(number, remap(row, columns))


def _text_files(paths: list[Path]) -> Iterator[Row]:
    for number, path in enumerate(paths, start=1):
        text, bad = _decode(path.read_bytes(), 1)
        yield bad if bad is not None else Row(number, {"text": text})


def read_rows(source: str, columns: Mapping[str, str] | None = None, split: str = "train") -> Iterator[Row]:
    """Rows from a JSONL/JSON/CSV/TXT/parquet file, a folder of them, or a hub data set id (its `split`)."""
    columns = columns or {}
    path = Path(source).expanduser()
    if path.is_symlink() and not path.exists():
        raise DataError(f"{source}: a broken or looping symbolic link", hint="point it at a file", code="broken_link")
    if path.is_dir() and not any(path.iterdir()):
        raise DataError(f"{source}: the folder is empty", hint="put the data files in it", code="empty_folder")
    if path.is_dir():
        texts = sorted(path.glob("*.txt"))
        if texts and not any(p.suffix in JSON_SUFFIXES | TABLE_SUFFIXES for p in path.iterdir()):
            yield from _text_files(texts)
        else:
            yield from _table_rows(str(path), columns, split)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in JSON_SUFFIXES:
            yield from (
                Row(r.line, remap(r.value, columns)) if columns and isinstance(r.value, dict) else r
                for r in _json_file(path)
            )
        elif suffix == ".csv":
            yield from _csv_rows(path, columns)
        elif suffix == ".txt":
            yield from _text_files([path])
        elif suffix in TABLE_SUFFIXES:
            yield from _table_rows(str(path), columns, "train")
        else:
            raise DataError(
                f"{source}: unknown file type {suffix!r}",
                hint="use .jsonl, .json, .csv, .txt or .parquet",
                code="unknown_file_type",
            )
    elif "/" in source and not source.startswith((".", "/", "~")) and not Path(source).parent.exists():
        yield from _table_rows(source, columns, split)
    else:
        raise DataError(f"{source}: no such file or folder", hint="check the path", code="not_found")


def source_digest(source: str) -> str:
    """sha256 of a file's bytes, or of every file in a folder (by relative name); a hub id hashes its name."""
    path = Path(source).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        digest.update(source.encode())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
