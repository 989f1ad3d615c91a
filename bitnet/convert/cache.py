"""Convert a checkpoint once into the user's cache, and find the result again.

``<cache root>/converted/<key>.gguf``, where the cache root is ``BITNET_CACHE_DIR`` or the
platformdirs user cache dir, and the key is a SHA-256 over:

- this converter's format version (bump it when the output for the same input changes);
- the whole bytes of the small files: config.json, the shard index, the tokenizer files;
- for each safetensors shard: its name, size, modification time and its JSON header (every
  tensor's name, dtype, shape and offsets).

The weight bytes themselves are not hashed: that would read the whole checkpoint (minutes for a
10B model) on every load just to find the cached file. A changed shard is caught by its size
or modification time (a re-download or an in-place edit rewrites the file), and a changed
layout by its header. Hugging Face cache snapshots are symlinks to immutable blobs, whose
resolved names are content hashes, so the key follows a new revision there as well.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from bitnet.convert.checkpoint import Checkpoint
from bitnet.hal.weight_formats import WeightFormat

__all__ = ["cache_key", "cached_gguf"]

CONVERTER_VERSION = 1


def cache_key(ckpt: Checkpoint, fmt: WeightFormat | None) -> str:
    digest = hashlib.sha256(f"bitnet-convert {CONVERTER_VERSION} {fmt}".encode())
    shards = {s.path for s in ckpt.files}
    for path in ckpt.content_files():
        digest.update(path.name.encode() + b"\0")
        if path in shards:
            stat = path.stat()
            resolved = path.resolve().name  # an HF cache blob's name is its content hash
            digest.update(f"{stat.st_size} {stat.st_mtime_ns} {resolved}".encode())
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                digest.update(f.read(n))  # SafetensorsFile has already bounded n
        else:
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def cached_gguf(directory: str | os.PathLike[str], fmt: WeightFormat | str | None = None,
                progress: bool | None = None) -> Path:
    """The GGUF file converted from ``directory``, converting it first if not cached."""
    from bitnet.convert.to_gguf import convert_checkpoint, parse_type
    from bitnet.registry.settings import read_settings

    ckpt = Checkpoint(directory)
    chosen = parse_type(fmt)
    root = read_settings().cache_dir / "converted"
    path = root / f"{Path(directory).resolve().name}-{cache_key(ckpt, chosen)}.gguf"
    if not path.is_file():
        convert_checkpoint(directory, path, chosen, force=True, progress=progress)
    return path
