"""Logits and greedy tokens from mainline llama.cpp through llama-cpp-python's low-level API.

The low-level API is used instead of ``llama_cpp.Llama`` because the high-level class can only
switch flash attention fully on or off, while llama.cpp's own default is "auto"; here every
context setting is explicit. Settings follow the parity fixtures' dumper
(shared/fixtures/README.md): 1 thread, F16 KV cache, one ``llama_decode`` over all positions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import llama_cpp as lc
import numpy as np

# llama-cpp-python prints every llama.cpp log line unless its logger says otherwise
logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

FLASH_ATTN = {
    "off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO,  # llama.cpp's default; resolves to "on" on CPU
}

_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        lc.llama_backend_init()
        _backend_ready = True


class LlamaCppModel:
    """One GGUF file loaded by llama.cpp (CPU only); contexts are made fresh per call."""

    def __init__(self, path: str | Path, n_ctx: int, flash_attn: str = "auto") -> None:
        if flash_attn not in FLASH_ATTN:
            raise ValueError(f"flash_attn must be one of {sorted(FLASH_ATTN)}, got {flash_attn!r}")
        _init_backend()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = 0
        self._model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.n_vocab = int(lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self._model)))
        self.n_ctx = n_ctx
        self.flash_attn = flash_attn

    def close(self) -> None:
        if self._model:
            lc.llama_model_free(self._model)
            self._model = None

    def _context(self, n_batch: int):
        params = lc.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = max(n_batch, 1)
        params.n_ubatch = max(n_batch, 1)  # one micro-batch: all positions in one graph
        params.n_threads = 1
        params.n_threads_batch = 1
        params.flash_attn_type = FLASH_ATTN[self.flash_attn]
        ctx = lc.llama_init_from_model(self._model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create a context")
        return ctx

    def _decode(self, ctx, ids: list[int], start: int, all_logits: bool) -> np.ndarray:
        """Decode ``ids`` at positions start.. in one batch; f32 [n_out, vocab] logits."""
        n = len(ids)
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            for i, token in enumerate(ids):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if all_logits or i == n - 1 else 0
            batch.n_tokens = n
            rc = lc.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            n_out = n if all_logits else 1
            ptr = lc.llama_get_logits(ctx)
            return np.ctypeslib.as_array(ptr, shape=(n_out * self.n_vocab,)).reshape(
                n_out, self.n_vocab).copy()
        finally:
            lc.llama_batch_free(batch)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits after every token of ``ids``, one decode in a fresh context: f32 [n, vocab]."""
        ctx = self._context(len(ids))
        try:
            return self._decode(ctx, list(ids), 0, all_logits=True)
        finally:
            lc.llama_free(ctx)

    def greedy(self, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
        """Argmax continuation (prompt in one decode, then one token per decode, KV cache
        growing). Returns the ids and the logits each was chosen from, f32 [steps, vocab];
        ties go to the lower id (numpy argmax)."""
        ctx = self._context(len(prompt))
        try:
            row = self._decode(ctx, list(prompt), 0, all_logits=False)[0]
            tokens: list[int] = []
            rows: list[np.ndarray] = []
            for step in range(steps):
                token = int(row.argmax())
                tokens.append(token)
                rows.append(row)
                if step + 1 < steps:
                    row = self._decode(ctx, [token], len(prompt) + step, all_logits=False)[0]
            return tokens, np.stack(rows)
        finally:
            lc.llama_free(ctx)
