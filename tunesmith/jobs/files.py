"""Uploaded files on disk: TUNESMITH_HOME/files/<id><suffix>, written aside and renamed, never named by the user."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO

from tunesmith import paths
from tunesmith.jobs.records import FileRecord, new_id

FILE_LIMIT = 512 * 1024 * 1024
"""Largest upload; more is refused with 413 (the request body limit of POST /v1/files)."""
SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet")
"""The kinds of data file a job reads; the stored file keeps the uploaded name's suffix so that it reads the same."""
CHUNK = 1024 * 1024


class TooLarge(Exception):
    """The upload is over FILE_LIMIT."""


def files_dir() -> Path:
    return paths.home() / "files"


def suffix_of(filename: str) -> str | None:
    """The data suffix of an uploaded name (only its last dot counts; slashes are not looked at), or None."""
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return suffix if suffix in SUFFIXES else None


def store_upload(source: BinaryIO, filename: str, purpose: str, suffix: str, limit: int = FILE_LIMIT) -> FileRecord:
    """Copy an upload into the files folder under a new id: in chunks, fsynced, renamed into place at the end."""
    file_id = new_id("file-")
    folder = files_dir()
    target = folder / f"{file_id}{suffix}"
    size = 0
    with paths.atomic_file(target) as out:
        for block in iter(lambda: source.read(CHUNK), b""):
            size += len(block)
            if size > limit:
                raise TooLarge
            out.write(block)
    return FileRecord(file_id, os.path.basename(filename)[:255], purpose, size, int(time.time()), str(target))


def store_bytes(data: bytes, filename: str, purpose: str) -> FileRecord:
    """A file a job writes (its results), stored like an upload."""
    file_id = new_id("file-")
    target = files_dir() / f"{file_id}{Path(filename).suffix}"
    with paths.atomic_file(target) as out:
        out.write(data)
    return FileRecord(file_id, filename, purpose, len(data), int(time.time()), str(target))
