"""An Ollama Modelfile whose TEMPLATE renders conversations exactly as the chat template did in training.

The chat template is probed (tunesmith.tokenize.template) for the text between each pair of roles. That glue
splits into what closes a turn (after a role's content) and what opens one (before it), plus what the template
adds at the very start. A Go template made of those pieces renders the same text as the Jinja template.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from tunesmith.errors import ExportError
from tunesmith.tokenize.render import ChatRenderer
from tunesmith.tokenize.template import END, GENERATE, START, Glue

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class TurnPieces:
    """A chat template as pieces: opening[role] + content + closing[role] per turn."""

    start: dict[str, str]
    """Text before the first turn, by the first turn's role (e.g. a default system prompt)."""
    opening: dict[str, str]
    """Text before a turn's content, by role."""
    closing: dict[str, str]
    """Text after a turn's content, by role."""
    generation: str
    """The assistant turn's opening at generation time."""


def _unexpressible(why: str) -> ExportError:
    return ExportError(
        f"the chat template cannot be written as an Ollama TEMPLATE: {why}",
        hint="export with --format merged (safetensors) and write an Ollama template by hand",
    )


def _propagate(middle: dict[tuple[str, str], str], closing: dict[str, str], opening: dict[str, str]) -> None:
    """glue(a, b) = closing(a) + opening(b): fill in one side wherever the other is known."""
    for (before, after), text in middle.items():
        if before in closing and after not in opening and text.startswith(closing[before]):
            opening[after] = text[len(closing[before]) :]
        if after in opening and before not in closing and text.endswith(opening[after]):
            closing[before] = text[: len(text) - len(opening[after])]


def turn_pieces(glue: Glue) -> TurnPieces:
    """Split probed glue into per-role opening and closing text; raises when the template does not split so."""
    pieces = glue.pieces
    middle = {k: v for k, v in pieces.items() if k[0] != START and k[1] not in (END, GENERATE)}
    closing = {before: text for (before, after), text in pieces.items() if after == END}
    opening: dict[str, str] = {}
    for _ in range(2 * len(ROLES)):
        _propagate(middle, closing, opening)
        for role in ROLES:  # a turn no probe isolates opens like the others, with its own role name
            known = next(((r, t) for r, t in opening.items() if r in t), None)
            if role not in opening and known is not None:
                opening[role] = known[1].replace(known[0], role)
    for (before, after), text in middle.items():
        if closing.get(before, "\0") + opening.get(after, "\0") != text:
            raise _unexpressible(f"the text between {before} and {after} turns depends on both")
    roles = [r for r in ROLES if r in opening]
    start = {}
    for role in roles:
        first = pieces.get((START, role))
        if first is None:
            continue
        if role not in opening or not first.endswith(opening[role]):
            raise _unexpressible(f"a conversation starting with {role} opens differently")
        start[role] = first[: len(first) - len(opening[role])]
    generations = {pieces[k][len(closing[k[0]]) :] for k in pieces if k[1] == GENERATE and k[0] in closing}
    if len(generations) != 1:
        raise _unexpressible("the generation prompt depends on the turn before it")
    return TurnPieces(start, opening, closing, generations.pop())


def _literal(text: str) -> str:
    if "{{" in text or '"""' in text:
        raise _unexpressible('its text contains "{{" or triple quotes')
    return text


def go_template(parts: TurnPieces) -> str:
    """The Go template (Ollama's TEMPLATE) for these pieces: no trim markers, so every character is kept."""
    first = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq (index .Messages 0).Role "{role}" }}}}{_literal(text)}'
        for i, (role, text) in enumerate(parts.start.items())
    )
    first = f"{first}{{{{ end }}}}" if first else ""
    turns = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}'
        f"{_literal(parts.opening[role])}{{{{ .Content }}}}{_literal(parts.closing[role])}"
        for i, role in enumerate(r for r in ROLES if r in parts.opening and r in parts.closing)
    )
    return (
        f"{{{{ if .Messages }}}}{first}{{{{ range .Messages }}}}{turns}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}"
        + _literal(parts.generation)
    )


def modelfile(tokenizer: PreTrainedTokenizerBase, gguf_name: str) -> str:
    """The Modelfile text: FROM the GGUF beside it, the TEMPLATE, and a stop parameter per end-of-turn token."""
    renderer = ChatRenderer(tokenizer)
    if renderer.glue is None:
        raise _unexpressible("its output depends on more than the roles of neighbouring turns")
    template = go_template(turn_pieces(renderer.glue))
    stops = [tokenizer.convert_ids_to_tokens(i) for i in renderer.stop_token_ids()]
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if renderer.glue.strips:
        lines.insert(0, "# The chat template trims each message; this TEMPLATE cannot, so send messages trimmed.")
    lines += [f'PARAMETER stop "{stop}"' for stop in dict.fromkeys(stops)]
    return "\n".join(lines) + "\n"


def write_modelfile(tokenizer: PreTrainedTokenizerBase, folder: Path, gguf_name: str) -> Path:
    path = folder / "Modelfile"
    path.write_text(modelfile(tokenizer, gguf_name))
    return path
