"""The `tunesmith` command: one file per command group; each parses, calls the library, prints.

Process-wide settings (logging, warning filters, progress bars of the libraries) are made here, once, when the
command starts: the library itself sets none of them.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Annotated

import typer

from tunesmith.cli import evaluate, export, generate, migrate, serve, train
from tunesmith.cli.common import OneLineLog
from tunesmith.cli.data import data_app
from tunesmith.cli.distill import distill_app
from tunesmith.cli.jobs import jobs_app
from tunesmith.cli.keys import audit, keys_app
from tunesmith.cli.models import models_app
from tunesmith.cli.settings import with_settings

app = typer.Typer(
    help="Fine-tune a language model on your data, see whether it helped, export and serve it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(jobs_app, name="jobs")
app.add_typer(distill_app, name="distill")
app.add_typer(keys_app, name="keys")
app.command("train")(with_settings(train.train))
app.command("generate")(generate.generate)
app.command("chat")(generate.chat)
app.command("compare")(evaluate.compare)
app.command("eval")(evaluate.evaluate_command)
app.command("export")(export.export)
app.command("serve")(serve.serve)
app.command("migrate")(migrate.migrate)
app.command("audit")(audit)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs.")] = False) -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", handlers=[OneLineLog()]
    )


def main() -> None:
    app()
