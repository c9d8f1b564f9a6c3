"""`tunesmith models list`."""

from __future__ import annotations

import typer

from tunesmith.cli.common import out

models_app = typer.Typer(help="Available and cached models.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """The embedded models and the converted ones in the cache."""
    from tunesmith.cli.show import print_models

    print_models(out)
