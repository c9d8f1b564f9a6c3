"""An Ollama Modelfile whose TEMPLATE renders prompts exactly as the chat template does.

The chat template is probed (tunesmith.tokenize.template) for the text between each pair of neighbouring roles in
a prompt (a conversation ending in the generation prompt). The Go template keeps the previous message's role in a
variable and writes, before each message's content, the glue for (previous role, this role), and after the last
message the glue into the generation prompt. So templates that merge the system message into the first user turn
(Mistral, Gemma 3), that add a default system prompt (Qwen2.5, Llama 3) or whose final answer differs from earlier
ones (Qwen3) are written as they render prompts; a template that refuses a system role (Gemma 2) gets the system
message merged into the first user turn as training merged it (tokenize/render.py).

A model whose template has no tool support gets tunesmith's tool fallback in its TEMPLATE too (`go_tools_template`:
Ollama's `.Tools`, `.ToolCalls` and tool messages written as training wrote them); one whose template has its own
tool syntax is written without tools (the family's Ollama template, from Ollama's library, has them).

A template that writes the bos token (Llama 3, Gemma, Mistral) is written without it: Ollama tokenises the rendered
prompt adding bos where the GGUF says the tokenizer does (`tokenizer.ggml.add_bos_token`), so keeping it would
give the model two.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from tunesmith.errors import ExportError
from tunesmith.export.gguf_vocab import adds_bos
from tunesmith.tokenize.render import SYSTEM_JOIN, ChatRenderer
from tunesmith.tokenize.template import GENERATE, START, learn_glue
from tunesmith.tokenize.tools import FALLBACK_TOOLS_PROMPT, RESPONSE_CLOSE, RESPONSE_OPEN

ROLES = ("system", "user", "assistant")
NONE = ""
"""The previous role before the first message."""


def _unexpressible(why: str) -> ExportError:
    return ExportError(
        f"the chat template cannot be written as an Ollama TEMPLATE: {why}",
        hint="export with --format merged (safetensors) and write an Ollama template by hand",
    )


def _literal(text: str) -> str:
    if "{{" in text or '"""' in text:
        raise _unexpressible('its text contains "{{" or triple quotes')
    return text


def _choices(cases: list[tuple[str, str]]) -> str:
    """An if / else-if chain over (condition, text); empty when there are no cases."""
    chain = "".join(
        f"{{{{ {'if' if i == 0 else 'else if'} {condition} }}}}{_literal(text)}"
        for i, (condition, text) in enumerate(cases)
    )
    return f"{chain}{{{{ end }}}}" if chain else ""


def _previous(role: str) -> str:
    return f'eq $prev "{NONE if role == START else role}"'


def _glue_choices(pieces: dict[tuple[str, str], str], role: str) -> tuple[str, str]:
    """(the choice of glue before a message, by $prev and `role`; the choice of generation prompt after the last)."""
    before = [
        (f'and ({_previous(a)}) (eq {role} "{b}")', text)
        for (a, b), text in pieces.items()
        if b in ROLES and (a in ROLES or a == START)
    ]
    after = [(_previous(a), text) for (a, b), text in pieces.items() if b == GENERATE and a in ROLES]
    if not after:
        raise _unexpressible("no generation prompt could be probed")
    return _choices(before), _choices(after)


def go_template(pieces: dict[tuple[str, str], str]) -> str:
    """The Go template (Ollama's TEMPLATE) for probed prompt glue: no trim markers, so every character is kept."""
    before, after = _glue_choices(pieces, ".Role")
    return (
        f'{{{{ $prev := "{NONE}" }}}}{{{{ range .Messages }}}}{before}{{{{ .Content }}}}'
        f"{{{{ $prev = .Role }}}}{{{{ end }}}}{after}"
    )


def go_tools_template(pieces: dict[tuple[str, str], str]) -> str:
    """The Go template of a model that uses tunesmith's tool fallback (tokenize/tools.py), as Ollama's TEMPLATE:
    `.Tools` listed in the system turn (after the first message when it is a system message, else as one), an
    assistant's `.ToolCalls` as <tool_call> blocks, tool messages as a user turn of <tool_response> blocks (one turn
    for consecutive results). Ollama writes JSON compactly where training wrote it with spaces, and arguments with
    their keys sorted: the only differences from the prompts training and the server render."""
    listed = "{{ range $k, $t := $.Tools }}{{ if $k }}\n{{ end }}{{ $t }}{{ end }}"
    tools = _literal(FALLBACK_TOOLS_PROMPT.replace("{tools}", "\0").format()).replace("\0", listed)
    before, after = _glue_choices(pieces, "$role")
    call = '<tool_call>\n{"name": "{{ $c.Function.Name }}", "arguments": {{ $c.Function.Arguments }}}\n</tool_call>'
    return (
        f'{{{{ $prev := "{NONE}" }}}}{{{{ $raw := "{NONE}" }}}}{{{{ range $i, $m := .Messages }}}}'
        f'{{{{ if and (eq $i 0) $.Tools (ne .Role "system") }}}}{_literal(pieces[(START, "system")])}{tools}'
        '{{ $prev = "system" }}{{ end }}'
        '{{ $role := .Role }}{{ if eq .Role "tool" }}{{ $role = "user" }}{{ end }}'
        f'{{{{ if and (eq .Role "tool") (eq $raw "tool") }}}}\n{{{{ else }}}}{before}{{{{ end }}}}'
        f'{{{{ if eq .Role "tool" }}}}{RESPONSE_OPEN}{{{{ .Content }}}}{RESPONSE_CLOSE}{{{{ else }}}}{{{{ .Content }}}}'
        f'{{{{ end }}}}{{{{ if and (eq $i 0) (eq .Role "system") $.Tools }}}}\n\n{tools}{{{{ end }}}}'
        f"{{{{ if .ToolCalls }}}}{{{{ if .Content }}}}\n{{{{ end }}}}"
        f"{{{{ range $j, $c := .ToolCalls }}}}{{{{ if $j }}}}\n{{{{ end }}}}{call}{{{{ end }}}}{{{{ end }}}}"
        f"{{{{ $prev = $role }}}}{{{{ $raw = .Role }}}}{{{{ end }}}}{after}"
    )


def _prompt_glue(renderer: ChatRenderer) -> dict[tuple[str, str], str]:
    glue = learn_glue(renderer.tokenizer, prompts_only=True)
    if glue is None:
        raise _unexpressible("its prompts depend on more than the roles of neighbouring turns")
    pieces = dict(glue.pieces)
    bos = renderer.tokenizer.bos_token
    if bos and adds_bos(renderer.tokenizer):  # Ollama adds it when tokenizing, as the GGUF says: not twice
        pieces = {key: text.removeprefix(bos) if key[0] == START else text for key, text in pieces.items()}
    if renderer.merges_system and (START, "user") in pieces:  # as rendering merges it: system, join, user
        pieces[(START, "system")] = pieces[(START, "user")]
        pieces[("system", "user")] = SYSTEM_JOIN
    return pieces


def modelfile(tokenizer: PreTrainedTokenizerBase, gguf_name: str) -> str:
    """The Modelfile text: FROM the GGUF beside it, the TEMPLATE, a stop parameter per end-of-turn token, and no
    repeat penalty."""
    renderer = ChatRenderer(tokenizer)
    pieces = _prompt_glue(renderer)
    # a template with tools of its own needs the family's Ollama template for them (Ollama's library has them); the
    # fallback lists the tools in a system turn, so a template without one is written without tools
    fallback = renderer.native_tools is None and (START, "system") in pieces
    template = go_tools_template(pieces) if fallback else go_template(pieces)
    stops = [tokenizer.convert_ids_to_tokens(i) for i in renderer.stop_token_ids()]
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if renderer.glue is not None and renderer.glue.strips:
        lines.insert(0, "# The chat template trims each message; this TEMPLATE cannot, so send messages trimmed.")
    lines += [f'PARAMETER stop "{stop}"' for stop in dict.fromkeys(stops)]
    # Ollama penalises repeated tokens by default (1.1); the tuned model was trained and evaluated without, and its
    # answers repeat what they must (names, account numbers), so they are served as it gives them
    lines.append("PARAMETER repeat_penalty 1")
    return "\n".join(lines) + "\n"


def write_modelfile(tokenizer: PreTrainedTokenizerBase, folder: Path, gguf_name: str) -> Path:
    path = folder / "Modelfile"
    path.write_text(modelfile(tokenizer, gguf_name))
    return path
