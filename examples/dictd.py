"""Entries of a dictd database shipped in a Debian package, for the recipes' data scripts (no root, no install).

`apt-get download` fetches the package into a folder and `dpkg-deb -x` unpacks it there; a dictd database is a
dictzip (gzip) file of entries and an index of `headword<TAB>offset<TAB>length`, both numbers in base-64 digits.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from pathlib import Path

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _number(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 64 + B64.index(digit)
    return value


def unpack(package: str, folder: Path) -> Path:
    """The package's files under folder/root."""
    subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
    deb = next(folder.glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "root")], check=True)
    return folder / "root"


def entries(root: Path, name: str, encoding: str) -> Iterator[str]:
    """The text of every entry of usr/share/dictd/<name>.dict.dz, in index order, without the database's own
    00-database-* entries."""
    body = gzip.decompress((root / f"usr/share/dictd/{name}.dict.dz").read_bytes())
    for line in (root / f"usr/share/dictd/{name}.index").read_text(encoding=encoding).splitlines():
        headword, offset, length = line.split("\t")
        if not headword.startswith("00"):
            yield body[_number(offset) : _number(offset) + _number(length)].decode(encoding)
