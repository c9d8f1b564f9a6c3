"""Where tunesmith keeps what it makes: TUNESMITH_HOME (default ~/.tunesmith)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def home() -> Path:
    """The root folder: $TUNESMITH_HOME, else ~/.tunesmith."""
    return Path(os.environ.get("TUNESMITH_HOME", Path.home() / ".tunesmith")).expanduser()


def models_dir() -> Path:
    """Converted and cached models, one folder each."""
    return home() / "models"


def runs_dir() -> Path:
    """Training runs, one folder each."""
    return home() / "runs"


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that a reader sees the old content or the new, never a half."""
    with atomic_file(path) as handle:
        handle.write(text.encode("utf-8"))


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: written aside, fsynced and renamed into place when the block ends;
    if it fails (Ctrl-C too) the temporary file goes and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(final_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `final_dir` to write into; when the block ends it replaces `final_dir` (an older
    folder of that name goes only then). If the block fails or is interrupted (Ctrl-C too), the temporary folder
    is removed and `final_dir` is left as it was."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}."))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes 0700
        replace_dir_atomic(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir_atomic(tmp_dir: Path, final_dir: Path) -> None:
    """Move a finished temporary folder into place; an older folder of that name is replaced."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
