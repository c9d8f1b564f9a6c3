"""`tunesmith generate` and `tunesmith chat`: a model or a run's result answers."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tunesmith.cli.common import MaxTokens, RunOrModel, err, out, user_errors

Opt = typer.Option

Temperature = Annotated[float, Opt(min=0.0, help="0 answers greedily; higher varies more.")]
Seed = Annotated[
    int | None,
    Opt(help="Makes sampling repeatable: in float32 the same seed gives the answer the API gives with it."),
]
Dtype = Annotated[str, Opt(help="auto (bf16 where fast), float32 or bfloat16.")]
TopP = Annotated[float, Opt(min=0.01, max=1.0, help="Sample from the likeliest tokens up to this mass.")]


def _open(model: str, dtype: str, **sampling: Any) -> tuple[Any, Any]:
    """The generator for `model` and the sampling settings, both commands alike."""
    from tunesmith.engine.sampling import Sampling
    from tunesmith.evaluate.generate import load_generator

    with user_errors():
        return load_generator(model, dtype=dtype), Sampling(**sampling)


def _answer(generator: Any, conversation: Any, sampling: Any) -> str:
    """Print an answer as it streams; return it whole."""
    pieces: list[str] = []
    for piece in generator.stream(conversation, sampling):
        pieces.append(piece)
        out.print(piece, end="", markup=False, highlight=False)
    out.print()
    return "".join(pieces).strip()


def generate(
    model: Annotated[str, Opt("--model", "-m", help="A run folder, or a model name, folder or .gguf.")],
    prompt: Annotated[str, Opt(help="The user message.")],
    system: Annotated[str | None, Opt(help="A system message.")] = None,
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    dtype: Dtype = "auto",
) -> None:
    """Answer one prompt with a model or a run's result, under its chat template."""
    from tunesmith.data.schema import Message

    generator, sampling = _open(model, dtype, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    _answer(generator, (*([Message("system", system)] if system else []), Message("user", prompt)), sampling)


def chat(
    model: RunOrModel,
    system: Annotated[str | None, Opt(help="A system message.")] = None,
    max_tokens: MaxTokens = 512,
    temperature: Temperature = 0.0,
    seed: Seed = None,
) -> None:
    """Talk to a model or a run's result; answers stream as they are made. /reset starts over, /exit ends."""
    from tunesmith.data.schema import Message

    generator, sampling = _open(model, "auto", max_tokens=max_tokens, temperature=temperature, seed=seed)
    start: list[Message] = [Message("system", system)] if system else []
    history = list(start)
    err.print("[dim]/reset starts over, /exit or Ctrl-D ends[/]")
    while True:
        try:
            text = out.input("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if text == "/exit":
            break
        if text == "/reset":
            history = list(start)
        elif text:
            history.append(Message("user", text))
            history.append(Message("assistant", _answer(generator, history, sampling)))
