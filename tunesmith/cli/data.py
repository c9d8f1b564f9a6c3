"""`tunesmith data check` and `tunesmith data show`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tunesmith.cli.common import (
    ColumnsOption,
    FormatOption,
    MaxLengthOption,
    MethodOption,
    ModelOption,
    QuantizeOption,
    SuperviseOption,
    out,
    parse_columns,
    user_errors,
)
from tunesmith.cli.settings import default

MODEL, FORMAT, MAX_LENGTH, SUPERVISE = (default(f) for f in ("model", "format", "max_length", "supervise"))
"""The training settings' defaults: a check reads the data as training will."""

data_app = typer.Typer(help="Check and inspect data sets.", no_args_is_help=True)


@data_app.command("check")
def data_check(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Training data: file, folder or hub data set id; several make a mix, each path[:weight][@objective]."
        ),
    ],
    eval_file: Annotated[str | None, typer.Option("--eval", help="Held-out data to check too.")] = None,
    model: ModelOption = MODEL,
    format: FormatOption = FORMAT,
    columns: ColumnsOption = "",
    max_length: MaxLengthOption = MAX_LENGTH,
    supervise: SuperviseOption = SUPERVISE,
    method: MethodOption = "lora",
    quantize: QuantizeOption = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    estimate: Annotated[bool, typer.Option(help="Measure this machine's speed to estimate training time.")] = True,
) -> None:
    """Find every problem in a data set (or each source of a mix) and what training on it would cost, before
    spending compute: whether the run fits this device's memory (with which batch tokens, activation
    checkpointing and quantisation) and how long it takes; suggest the objective and method."""
    from tunesmith.check import DataOptions, check_data, mix_estimate
    from tunesmith.cli.show import print_check_report, print_mix
    from tunesmith.config import build_config
    from tunesmith.models.load import load_tokenizer, model_width
    from tunesmith.training.throughput import training_tokens_per_second

    with user_errors():
        sources = build_config({"data": files}, "command line").data
        column_map = parse_columns(columns)  # a bad flag fails before the model loads and the speed is measured
        tokenizer = load_tokenizer(model)
        memory = memory_plan(model, method, quantize)
        speed = training_tokens_per_second(model, method) if estimate and memory["fits"] else None
        width = model_width(model)
        reports = []
        for index, source in enumerate(sources):
            options = DataOptions.of_source(
                source,
                source.objective,
                format=format,
                max_length=max_length,
                supervise=supervise,  # type: ignore[arg-type]
                columns=column_map,
            )
            held_out = eval_file if index == 0 else None  # the main task's: a mix's first source
            reports.append(
                check_data(source.path, tokenizer, options, eval_source=held_out, tokens_per_second=speed, width=width)
            )
        for report in reports:
            report.stats["training"]["memory"] = memory
        mix = mix_estimate(list(sources), reports) if len(sources) > 1 else None
    if as_json:
        whole = reports[0].as_dict() if mix is None else {"sources": [r.as_dict() for r in reports], "mix": mix}
        out.print_json(json.dumps(whole))
    else:
        for source, report in zip(sources, reports, strict=True):
            if mix is not None:
                out.rule(str(source))
            print_check_report(out, report)
        if mix is not None:
            print_mix(out, mix)
    raise typer.Exit(0 if all(r.ok for r in reports) else 2)


def memory_plan(model: str, method: str, quantize: str) -> dict:
    """The run's memory plan on this device (tunesmith/training/fit.py), as the report shows it."""
    import torch

    from tunesmith.config import build_config
    from tunesmith.training.plan import PlanFacts
    from tunesmith.training.precision import check_quantize

    config = build_config({"data": "-", "model": model, "method": method, "quantize": quantize}, "command line")
    facts = PlanFacts.measure(config)
    check_quantize(quantize, method, torch.device(facts.device))
    fit = facts.fit(config)
    if fit is None:
        return {"fits": True, "device": facts.device, "precision": facts.precision, "planned": False}
    return {"device": facts.device, "precision": facts.precision, **fit.as_dict()}


@data_app.command("show")
def data_show(
    file: Annotated[str, typer.Argument(help="Data file, folder or hub data set id.")],
    n: Annotated[int, typer.Option("-n", help="How many examples to show.")] = 3,
    model: ModelOption = MODEL,
    format: FormatOption = FORMAT,
    columns: ColumnsOption = "",
    max_length: MaxLengthOption = MAX_LENGTH,
    supervise: SuperviseOption = SUPERVISE,
) -> None:
    """Show examples as the model sees them: trained tokens highlighted, masked ones dim."""
    from tunesmith.check import DataOptions
    from tunesmith.cli.show import print_example
    from tunesmith.models.load import load_tokenizer

    with user_errors():
        tokenizer = load_tokenizer(model)
        options = DataOptions(
            format=format,
            columns=parse_columns(columns),
            max_length=max_length,
            supervise=supervise,  # type: ignore[arg-type]
        )
        examples = options.first(file, tokenizer, max(n, 0))
    for example in examples:
        print_example(out, file, example, tokenizer)
