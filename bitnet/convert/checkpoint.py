"""A local Hugging Face checkpoint directory: config.json, safetensors shards, tokenizer files.

Tensors are found through ``model.safetensors.index.json`` when the checkpoint is sharded, else
in every ``*.safetensors`` file of the directory. Nothing is read until a tensor is asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.convert.errors import ConvertError
from bitnet.convert.safetensors_file import SafetensorsFile, TensorEntry, to_f32

__all__ = ["Checkpoint", "is_checkpoint_dir", "read_json"]

INDEX_FILE = "model.safetensors.index.json"


def is_checkpoint_dir(path: str | Path) -> bool:
    """A directory with a config.json: what ``bitnet.load`` converts before running."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def read_json(directory: Path, name: str, required: bool = False) -> dict[str, Any]:
    """A JSON object file of a checkpoint, or {} when absent and not required."""
    path = directory / name
    if not path.is_file():
        if required:
            raise ConvertError(f"{directory}: {name} is missing (not a Hugging Face checkpoint "
                               "directory?)")
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConvertError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return value


class Checkpoint:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise ConvertError(f"{self.dir}: not a directory (a Hugging Face checkpoint is a "
                               "directory with config.json and *.safetensors)")
        self.config = self.read_json("config.json", required=True)
        self.files = self._shards()
        self._where: dict[str, SafetensorsFile] = {}
        for shard in self.files:
            for name in shard.entries:
                if name in self._where:
                    raise ConvertError(f"{self.dir}: tensor {name!r} is in both "
                                       f"{self._where[name].path.name} and {shard.path.name}")
                self._where[name] = shard

    def read_json(self, name: str, required: bool = False) -> dict[str, Any]:
        return read_json(self.dir, name, required)

    def _shards(self) -> list[SafetensorsFile]:
        index = self.dir / INDEX_FILE
        if index.is_file():
            weight_map = self.read_json(INDEX_FILE).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConvertError(f"{index}: no 'weight_map'")
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (self.dir / n).is_file()]
            if missing:
                raise ConvertError(f"{self.dir}: shard {missing[0]!r} named in {INDEX_FILE} is "
                                   "missing (incomplete download?)")
            return [SafetensorsFile(self.dir / n) for n in names]
        paths = sorted(self.dir.glob("*.safetensors"))
        if not paths:
            found = [p.name for p in self.dir.glob("*.bin")] + [p.name for p in
                                                               self.dir.glob("*.pt*")]
            hint = (f" (found {found[0]}: PyTorch pickles are not read, for safety; save the "
                    "model with safetensors)") if found else ""
            raise ConvertError(f"{self.dir}: no *.safetensors files{hint}")
        return [SafetensorsFile(p) for p in paths]

    # tensors

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def entry(self, name: str) -> TensorEntry:
        shard = self._where.get(name)
        if shard is None:
            raise ConvertError(f"{self.dir}: tensor {name!r} is missing")
        return shard.entries[name]

    def raw(self, name: str) -> np.ndarray:
        """The stored bits, memory-mapped (BF16 as uint16)."""
        self.entry(name)
        return self._where[name].tensor(name)

    def f32(self, name: str, rows: slice | None = None) -> np.ndarray:
        """A float tensor as an f32 copy, optionally only some rows (to bound memory)."""
        entry = self.entry(name)
        bits = self.raw(name)
        if rows is not None:
            bits = bits[rows]
        try:
            return to_f32(bits, entry.dtype)
        except ValueError:
            raise ConvertError(f"tensor {name!r} is {entry.dtype}, expected a float "
                               "dtype") from None

    def content_files(self) -> list[Path]:
        """The files whose bytes define the converted model (for cache keys)."""
        names = ["config.json", INDEX_FILE, "tokenizer.json", "tokenizer.model",
                 "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json",
                 "chat_template.jinja", "generation_config.json"]
        paths = [self.dir / n for n in names if (self.dir / n).is_file()]
        return paths + [s.path for s in self.files]
