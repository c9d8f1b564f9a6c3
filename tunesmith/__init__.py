"""tunesmith: fine-tune a language model on your data, see whether it helped, export and serve it.

The public API is imported lazily, so `import tunesmith` (and the CLI's start) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "check_data": "tunesmith.check",
    "read_dataset": "tunesmith.data.validate",
    "encode": "tunesmith.tokenize.encode",
    "load_model": "tunesmith.models.load",
    "load_tokenizer": "tunesmith.models.load",
    "RunConfig": "tunesmith.config",
    "train": "tunesmith.training.runner",
    "resume": "tunesmith.training.runner",
    "load_generator": "tunesmith.evaluate.generate",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
