"""Digests of a plugin's kernel files, for ``BackendDescriptor.fingerprint`` and build manifests.

The registry keys its validation cache on the fingerprint, so it must change whenever a kernel
file does. Every plugin hashes the same way: sha256 over each file's name and bytes, in name
order. Light on purpose (hashlib only): descriptor modules import it at plugin discovery.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.resources.abc import Traversable
from pathlib import Path


def kernel_files(folder: Path | Traversable, suffixes: tuple[str, ...]) -> list[Traversable]:
    """The files in ``folder`` whose names end with one of ``suffixes``, sorted by name."""
    found = [entry for entry in folder.iterdir() if entry.name.endswith(suffixes)]
    return sorted(found, key=lambda entry: entry.name)


def files_digest(files: Iterable[Path | Traversable], salt: bytes = b"",
                 separator: bytes = b"") -> str:
    """sha256 hex digest of ``salt``, then each file's name and bytes, each followed by
    ``separator``. Plugins that already ship a digest keep its salt / separator so the values
    they recorded stay valid."""
    h = hashlib.sha256(salt)
    for entry in files:
        h.update(entry.name.encode())
        h.update(separator)
        h.update(entry.read_bytes())
        h.update(separator)
    return h.hexdigest()
