"""`tunesmith train`'s setting options, made from RunConfig's fields and docstrings.

A setting is written once, as a field of `RunConfig` (config.py) with its docstring: it becomes the option
`--field-name` (`--lora-rank` for lora.rank), its help and its default here, and pydantic parses what is typed, as
it parses config files. A new setting costs one field.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from tunesmith.config import RunConfig

EXTRA_NAMES = {
    "model": ("-m",),
    "learning_rate": ("--lr",),
    "eval_data": ("--eval",),
    "reinforcement.graders": ("--grader",),
}
"""Short names of a few everyday settings, besides --field-name."""
PANEL = "Settings (also in a --config YAML file; the option wins)"
FILE_ONLY = {"stages"}
"""Settings only a --config file can give (a list of groups of settings)."""


@dataclass(frozen=True)
class Setting:
    """One leaf field of RunConfig as a command-line option."""

    field: str
    """Dotted path in the config, e.g. lora.rank."""
    info: FieldInfo
    """Its pydantic field: type, default, docstring."""

    @property
    def param(self) -> str:
        """The Python name the option's value arrives under."""
        return self.field.replace(".", "_")

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--" + self.field.replace(".", "-").replace("_", "-"), *EXTRA_NAMES.get(self.field, ()))

    @property
    def repeated(self) -> bool:
        """A tuple setting: the option is given once per item."""
        return typing.get_origin(self.info.annotation) is tuple

    def help(self) -> str:
        default = self.info.default
        text = str(self.info.description)
        if self.info.is_required():
            text += " (needed here or in --config)"
        elif default is not None:
            text += f" [default: {','.join(default) if isinstance(default, tuple) else default}]"
        return escape(text)

    def parameter(self) -> inspect.Parameter:
        kind = list[str] | None if self.repeated else str | None
        option = typer.Option(*self.flags, help=self.help(), metavar=metavar(self.info), rich_help_panel=PANEL)
        return inspect.Parameter(
            self.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option]
        )


def settings(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[Setting]:
    """Every leaf setting in declaration order; groups (lora) are walked into."""
    for name, info in model.model_fields.items():
        if name in FILE_ONLY:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from settings(annotation, f"{prefix}{name}.")
        else:
            yield Setting(prefix + name, info)


def metavar(info: FieldInfo) -> str:
    """What an option takes, from its type: lora|dora|full, INT|auto, FLOAT, TEXT."""
    names = {int: "INT", float: "FLOAT", str: "TEXT", bool: "true|false"}
    parts: list[str] = []
    union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
    for member in typing.get_args(info.annotation) if union else (info.annotation,):
        if typing.get_origin(member) is typing.Literal:
            parts += [str(v) for v in typing.get_args(member)]
        elif typing.get_origin(member) is tuple:
            parts.append("TEXT (once per item)")
        elif member is not type(None):
            parts.append(names.get(member, "TEXT"))
    return "|".join(parts)


def doc(field: str) -> str:
    """The docstring of a setting, for options of other commands that mean the same (e.g. --max-length)."""
    return next(s.info.description or "" for s in settings() if s.field == field)


def default(field: str) -> Any:
    """The default of a setting."""
    return next(s.info.default for s in settings() if s.field == field)


def with_settings(command: Callable[..., None]) -> Callable[..., None]:
    """`command(given, ...)` as a typer command that also takes one option per setting. The settings typed on the
    command line arrive in `given` (dotted field -> text, or list of texts), the command's own options as they are."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "given"]
    options = list(settings())
    params = {s.param for s in options}

    def invoke(**values: Any) -> None:
        given = {s.field: values[s.param] for s in options if values.get(s.param) not in (None, [])}
        command(given, **{name: value for name, value in values.items() if name not in params})

    invoke.__signature__ = inspect.Signature([*own, *(s.parameter() for s in options)])  # type: ignore[attr-defined]
    invoke.__doc__ = command.__doc__
    return invoke
