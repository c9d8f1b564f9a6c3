"""Read a data source into records and find what is wrong with it, line by line, in one streaming pass."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.digests import Digests
from tunesmith.data.formats import FORMATS, Format, RecordError, detect, not_an_object
from tunesmith.data.load import Row, read_rows
from tunesmith.data.schema import Record
from tunesmith.errors import DataError

DETECT_SAMPLE = 200
"""The format is detected from the first this many JSON objects."""
PROBLEM_LIMIT = 1000
"""Errors (and warnings) listed per data set with their line; more are counted, so memory stays bounded."""
CHUNK = 2048
"""Records handed out at a time: a large file is never held whole."""


@dataclass(frozen=True, slots=True)
class Problem:
    """An error or a warning about one line of one file (line 0: the file as a whole)."""

    file: str
    """The file or data set it is about."""
    line: int
    """1-based line, 0 for the whole file."""
    code: str
    """A stable code, e.g. unrecognized_role."""
    message: str
    """What is wrong and, where it helps, how to fix it."""

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.message} [{self.code}]"
            if self.line
            else f"{self.file}: {self.message} [{self.code}]"
        )

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "code": self.code, "message": self.message}


class Problems:
    """The errors or the warnings of one data set: the first PROBLEM_LIMIT listed, every one counted."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.listed: list[Problem] = []
        self.total = 0

    def add(self, problem: Problem) -> None:
        self.total += 1
        if len(self.listed) < PROBLEM_LIMIT:
            self.listed.append(problem)

    def listing(self) -> list[Problem]:
        """In line order, and a last line saying how many more there are when some were not listed."""
        out = sorted(self.listed, key=lambda p: p.line)
        if self.total > len(out):
            out.append(Problem(self.source, 0, "not_listed", f"{self.total - len(out):,} more like these, not listed"))
        return out


def _choose_format(source: str, objects: list[Any], name: str) -> Format:
    if name != "auto":
        if name not in FORMATS:
            raise DataError(
                f"format {name!r} is unknown", hint=f"use auto or one of {', '.join(FORMATS)}", code="unknown_format"
            )
        return FORMATS[name]
    found = detect(objects)
    if found is None:
        signatures = "; ".join(f"{f.name}: {'/'.join(f.keys)}" for f in FORMATS.values())
        raise DataError(
            f"{source}: no example has the fields of a known format ({signatures})",
            hint="rename the fields, or map CSV columns with --columns",
            code="unknown_format",
        )
    return found


def _not_an_example(source: str, row: Row) -> Problem:
    if row.code:
        return Problem(source, row.line, row.code, row.message)
    error = not_an_object(row.value)
    return Problem(source, row.line, error.code, error.message)


class RecordReader:
    """One pass over a source: the format detected from its first objects, every row parsed, the records handed
    out in chunks and let go; errors, duplicates (by digest) and counts kept."""

    def __init__(
        self, source: str, *, format: str = "auto", columns: Mapping[str, str] | None = None, split: str = "train"
    ) -> None:
        self.source = source
        self.format = "unknown"
        """The detected (or given) format name, once the first chunk is out."""
        self.records = 0
        """Records parsed so far."""
        self.errors = Problems(source)
        self.warnings = Problems(source)
        self.digests = Digests()
        self._format = format
        self._columns = columns
        self._split = split

    def chunks(self) -> Iterator[list[tuple[int, Record]]]:
        """(line, record) lists of up to about CHUNK records in reading order; duplicates are warned of at the end.
        Rows that are not objects are errors at once; objects wait only until the format is known."""
        head: list[Row] = []
        fmt: Format | None = None
        chunk: list[tuple[int, Record]] = []
        empty = True
        for row in read_rows(self.source, self._columns, self._split):
            empty = False
            if row.code or not isinstance(row.value, dict):
                self.errors.add(_not_an_example(self.source, row))
                continue
            head.append(row)
            if fmt is None and len(head) < DETECT_SAMPLE:
                continue
            fmt = fmt or self._detect(head)
            chunk += self._parse(fmt, head)
            head = []
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if head:
            chunk += self._parse(fmt or self._detect(head), head)
        if chunk:
            yield chunk
        if empty:
            self.errors.add(Problem(self.source, 0, "empty_file", "the file has no examples"))
        for line, first in self.digests.repeats():
            self.warnings.add(Problem(self.source, line, "duplicate", f"repeats line {first} exactly"))

    def _detect(self, head: list[Row]) -> Format:
        fmt = _choose_format(self.source, [r.value for r in head], self._format)
        self.format = fmt.name
        return fmt

    def _parse(self, fmt: Format, rows: list[Row]) -> list[tuple[int, Record]]:
        out = []
        for row in rows:
            try:
                record = fmt.parse(row.value)
            except RecordError as exc:
                self.errors.add(Problem(self.source, row.line, exc.code, exc.message))
                continue
            self.digests.add(row.line, record)
            out.append((row.line, record))
        self.records += len(out)
        return out


@dataclass(frozen=True)
class Dataset:
    """The usable records of a source, with the line each came from, and what was wrong."""

    source: str
    """The file, folder or hub id read."""
    format: str
    """The detected (or given) format name."""
    records: list[tuple[int, Record]]
    """(line, record) for every line that parsed."""
    errors: list[Problem] = field(default_factory=list)
    """Lines that could not be used, and file-level errors."""
    warnings: list[Problem] = field(default_factory=list)
    """Usable but suspicious lines."""


def data_error(problems: list[Problem], count: int, source: str) -> DataError:
    """The error to stop on: the first problem, how many more there are, and where to see them all."""
    more = f" (and {count - 1:,} more)" if count > 1 else ""
    return DataError(f"{problems[0]}{more}", hint=f"see every problem with: tunesmith data check {source}")


def read_dataset(source: str, *, format: str = "auto", columns: Mapping[str, str] | None = None) -> Dataset:
    """Every record of a source in memory, for small sets (held-out data, samples); see RecordReader."""
    reader = RecordReader(source, format=format, columns=columns)
    records = [record for chunk in reader.chunks() for record in chunk]
    return Dataset(source, reader.format, records, reader.errors.listing(), reader.warnings.listing())


def overlap_warnings(train: RecordReader, eval_set: RecordReader) -> list[Problem]:
    """Eval examples that also appear in the training data: their scores would flatter the model."""
    return [
        Problem(eval_set.source, line, "eval_overlap", f"also in the training data ({train.source}:{first})")
        for line, first in eval_set.digests.also_in(train.digests)
    ]
