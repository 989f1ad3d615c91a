"""What both llama.cpp cross-check modules share: the backends to compare, and each case's GGUF
file, llama.cpp context, bitnet model and computed results, made once and reused by the many
parametrized tests of a module. A case is anything with a ``name`` and ``write(path) -> Path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

import bitnet
from tests.crosscheck.llama_cpp_runner import LlamaCppModel

FLASH_ATTN = ["off", "on"]


def plugins_with_cpu() -> str:
    """BITNET_PLUGINS plus ``cpu``: the suite's conftest loads no plugin unless a test asks."""
    names = [n for n in os.environ.get("BITNET_PLUGINS", "").split(",") if n.strip()]
    return ",".join(dict.fromkeys([*names, "cpu"]))


def available_backends() -> list[str]:
    """The reference backend always; the native CPU plugin too when installed and usable."""
    names = ["reference"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BITNET_PLUGINS", plugins_with_cpu())
        if any(rec.backend == "cpu" and rec.status == "ok" for rec in bitnet.list_devices()):
            names.append("cpu")
    return names


class SessionModels:
    """Per-module memo of files, llama.cpp contexts, bitnet models and results."""

    def __init__(self, n_ctx: int) -> None:
        self.n_ctx = n_ctx
        self.files: dict[str, Path] = {}
        self.llama_models: dict[tuple[str, str], LlamaCppModel] = {}
        self.ours_models: dict[tuple[str, str], Any] = {}
        self.results: dict[tuple, Any] = {}

    def file(self, case: Any, model_dir: Path) -> Path:
        if case.name not in self.files:
            self.files[case.name] = case.write(model_dir / f"{case.name}.gguf")
        return self.files[case.name]

    def llama(self, case: Any, model_dir: Path, flash_attn: str) -> LlamaCppModel:
        key = (case.name, flash_attn)
        if key not in self.llama_models:
            path = self.file(case, model_dir)
            self.llama_models[key] = LlamaCppModel(path, self.n_ctx, flash_attn)
        return self.llama_models[key]

    def ours(self, case: Any, model_dir: Path, backend: str) -> Any:
        key = (case.name, backend)
        if key not in self.ours_models:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("BITNET_PLUGINS", plugins_with_cpu())
                path = self.file(case, model_dir)
                self.ours_models[key] = bitnet.load(path, device=backend, progress=False)
        return self.ours_models[key]

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self.results:
            self.results[key] = compute()
        return self.results[key]

    def close_llama(self) -> None:
        """Free the llama.cpp contexts (a module's worth holds a lot of memory)."""
        for model in self.llama_models.values():
            model.close()
        self.llama_models.clear()
