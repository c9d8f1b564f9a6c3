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
