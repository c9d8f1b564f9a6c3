"""Errors a user can act on: a one-line message and a hint saying how to fix it."""

from __future__ import annotations


class TunesmithError(Exception):
    """Base of every error tunesmith raises on purpose; the CLI prints it on one line and exits 2."""

    def __init__(self, message: str, hint: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        """A stable code for scripts (e.g. unknown_format), when the error has one."""

    def __str__(self) -> str:
        text = f"{self.message} [{self.code}]" if self.code else self.message
        return f"{text} ({self.hint})" if self.hint else text


class DataError(TunesmithError):
    """A data file or data set cannot be read or used."""


class ConfigError(TunesmithError):
    """A setting is unknown, missing or out of range."""


class ModelError(TunesmithError):
    """A model or tokenizer cannot be found or loaded."""


class TrainingError(TunesmithError):
    """A run cannot go on: the loss or the gradients stopped being finite, or it cannot resume."""


class ExportError(TunesmithError):
    """A run cannot be exported in the format asked for."""


UNION_TAGS = ("int", "float", "str", "bool", "none")
"""Names pydantic puts in an error's location for the member of a union a value was tried against."""


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the dotted name of the field a user wrote: union members
    (`int`, `literal['auto']`, ...) are left out, list positions kept."""
    parts = [
        str(part)
        for part in loc
        if (isinstance(part, int) and part >= 0) or (str(part).isidentifier() and part not in UNION_TAGS)
    ]
    return ".".join(parts)
