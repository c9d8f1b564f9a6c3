"""The `tunesmith` command: parse, call the library, print."""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Annotated

import typer

from tunesmith import cli_export, cli_train
from tunesmith.cli_common import (
    ColumnsOption,
    FormatOption,
    MaxLengthOption,
    ModelOption,
    OneLineLog,
    SuperviseOption,
    out,
    parse_columns,
    user_errors,
)
from tunesmith.models.sources import DEFAULT_MODEL

app = typer.Typer(
    help="Fine-tune a language model on your data, see whether it helped, export and serve it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Check and inspect data sets.", no_args_is_help=True)
models_app = typer.Typer(help="Available and cached models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.command("train")(cli_train.train)
app.command("generate")(cli_train.generate)
app.command("chat")(cli_train.chat)
app.command("compare")(cli_train.compare)
app.command("eval")(cli_train.evaluate_command)
app.command("export")(cli_export.export)
app.command("serve")(cli_export.serve)


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


@data_app.command("check")
def data_check(
    file: Annotated[str, typer.Argument(help="Training data: file, folder or hub data set id.")],
    eval_file: Annotated[str | None, typer.Option("--eval", help="Held-out data to check too.")] = None,
    model: ModelOption = DEFAULT_MODEL,
    format: FormatOption = "auto",
    columns: ColumnsOption = "",
    max_length: MaxLengthOption = 2048,
    supervise: SuperviseOption = "assistant",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    estimate: Annotated[bool, typer.Option(help="Measure this machine's speed to estimate training time.")] = True,
) -> None:
    """Find every problem in a data set and what training on it would cost, before spending compute."""
    from tunesmith.check import check_data
    from tunesmith.cli_show import print_check_report
    from tunesmith.models.load import load_tokenizer
    from tunesmith.train.throughput import training_tokens_per_second

    with user_errors():
        tokenizer = load_tokenizer(model)
        report = check_data(
            file,
            tokenizer,
            eval_source=eval_file,
            format=format,
            columns=parse_columns(columns),
            max_length=max_length,
            supervise=supervise,  # type: ignore[arg-type]
            tokens_per_second=training_tokens_per_second(model) if estimate else None,
        )
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        print_check_report(out, report)
    raise typer.Exit(0 if report.ok else 2)


@data_app.command("show")
def data_show(
    file: Annotated[str, typer.Argument(help="Data file, folder or hub data set id.")],
    n: Annotated[int, typer.Option("-n", help="How many examples to show.")] = 3,
    model: ModelOption = DEFAULT_MODEL,
    format: FormatOption = "auto",
    columns: ColumnsOption = "",
    max_length: MaxLengthOption = 2048,
    supervise: SuperviseOption = "assistant",
) -> None:
    """Show examples as the model sees them: trained tokens highlighted, masked ones dim."""
    from tunesmith.cli_show import print_example
    from tunesmith.data.validate import read_dataset
    from tunesmith.models.load import load_tokenizer
    from tunesmith.tokenize.encode import encode

    with user_errors():
        tokenizer = load_tokenizer(model)
        dataset = read_dataset(file, format=format, columns=parse_columns(columns))
        encoded = encode(dataset.records[: max(n, 0)], tokenizer, max_length=max_length, supervise=supervise)  # type: ignore[arg-type]
    for example in encoded.examples[:n]:
        print_example(out, dataset.source, example, tokenizer)


@models_app.command("list")
def models_list() -> None:
    """The embedded models and the converted ones in the cache."""
    from tunesmith.cli_show import print_models

    print_models(out)


def main() -> None:
    app()
