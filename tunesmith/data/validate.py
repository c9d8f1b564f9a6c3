"""Read a data source into records and find what is wrong with it, line by line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tunesmith.data.formats import FORMATS, Format, RecordError, detect
from tunesmith.data.load import Row, read_rows
from tunesmith.data.schema import Record
from tunesmith.errors import DataError

DETECT_SAMPLE = 200


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


def _choose_format(source: str, rows: list[Row], name: str) -> Format:
    if name != "auto":
        if name not in FORMATS:
            raise DataError(
                f"format {name!r} is unknown", hint=f"use auto or one of {', '.join(FORMATS)}", code="unknown_format"
            )
        return FORMATS[name]
    found = detect(r.value for r in rows[:DETECT_SAMPLE] if r.code == "")
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
    return Problem(source, row.line, "data_type", f"expected a JSON object, got {type(row.value).__name__}")


def read_dataset(source: str, *, format: str = "auto", columns: Mapping[str, str] | None = None) -> Dataset:
    """Read every row, detect the format, parse each row; errors and duplicate warnings carry line numbers."""
    rows = list(read_rows(source, columns))
    if not rows:
        return Dataset(source, "unknown", [], [Problem(source, 0, "empty_file", "the file has no examples")])
    if not any(isinstance(row.value, dict) for row in rows):  # no example at all: say why line by line
        return Dataset(source, "unknown", [], [_not_an_example(source, row) for row in rows])
    fmt = _choose_format(source, rows, format)
    records: list[tuple[int, Record]] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    first_seen: dict[Record, int] = {}
    for row in rows:
        if row.code:
            errors.append(Problem(source, row.line, row.code, row.message))
            continue
        try:
            record = fmt.parse(row.value)
        except RecordError as exc:
            errors.append(Problem(source, row.line, exc.code, exc.message))
            continue
        if record in first_seen:
            warnings.append(Problem(source, row.line, "duplicate", f"repeats line {first_seen[record]} exactly"))
        else:
            first_seen[record] = row.line
        records.append((row.line, record))
    return Dataset(source, fmt.name, records, errors, warnings)


def overlap_warnings(train: Dataset, eval_set: Dataset) -> list[Problem]:
    """Eval examples that also appear in the training data: their scores would flatter the model."""
    seen = {record: line for line, record in train.records}
    return [
        Problem(eval_set.source, line, "eval_overlap", f"also in the training data ({train.source}:{seen[record]})")
        for line, record in eval_set.records
        if record in seen
    ]
