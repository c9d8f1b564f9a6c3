"""Errors a user can act on: a one-line message and a hint saying how to fix it."""

from __future__ import annotations


class TunesmithError(Exception):
    """Base of every error tunesmith raises on purpose; the CLI prints it on one line and exits 2."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DataError(TunesmithError):
    """A data file or data set cannot be read or used."""


class ConfigError(TunesmithError):
    """A setting is unknown, missing or out of range."""


class ModelError(TunesmithError):
    """A model or tokenizer cannot be found or loaded."""


class JobError(TunesmithError):
    """A fine-tuning job cannot be created, run or changed."""


class TrainingError(TunesmithError):
    """A run cannot go on: the loss or the gradients stopped being finite, or it cannot resume."""


class ExportError(TunesmithError):
    """A run cannot be exported in the format asked for."""
