"""Decode steps replayed from one recording: the forward pass runs once under the backend's
recorder, later steps of the same shape only write their token id and position and replay it.

Like llama.cpp's CUDA graphs and tinygrad's TinyJit: the Python forward pass stays the only
description of the model; a backend that can record (``KernelBackend.recording``; the GPU
backend over a runtime with replay) captures its dispatches, and per-step values live in device
buffers the kernels read (token ids here, the position in the backend's step buffer). One
recording per KV cache (its addresses are in the recorded dispatches); a step beyond the
positions a recording reaches runs eagerly and is recorded again. A backend without replay runs
every step eagerly; a recording that fails turns replay off for the model with one log line.
``BITNET_REPLAY=0`` turns it off.

The server's batched steps (``Transformer.forward_batch``: B sequences of one paged pool)
replay the same way, one recording per pool and batch size B: the rows' token ids, positions
and block tables are what a replay writes, the tables widened to the context's width so that
one recording serves every step of B rows (the unused tail names block 0, never read).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("bitnet")
MAX_RECORDINGS = 4  # caches with a recording kept at once (generate and bench use one)
MAX_ROW_RECORDINGS = 16  # batched steps (pool, batch size) with a recording kept at once


@dataclass
class RecordedStep:
    replay: Any  # the backend's recording: replay(pos) or replay_rows(...), positions
    ids: Any  # int32 [n] device buffer the recorded embed reads
    logits: Any  # f32 [n, V] device buffer the recorded head writes
    cache: Any  # the KV cache it writes (held: its id keys the recording and is not reused)


class DecodeReplay:
    """Decode steps of one Transformer, replayed per KV cache where the backend records."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.enabled = os.environ.get("BITNET_REPLAY", "1") != "0"
        self.steps: dict[int, RecordedStep] = {}  # id(cache) -> its recording
        self.row_steps: dict[tuple[int, int], RecordedStep] = {}  # (id(pool), B) -> recording
        self.replayed = 0  # steps that replayed (tests assert on it)
        self.failure: str | None = None  # why recording failed, if it did (then replay is off)

    def decode(self, token: int, pos: int, cache: Any) -> Any:
        """One token at pos of cache -> logits f32 [1, V] on the device."""
        ids = np.asarray([token], dtype=np.int32)
        step = self.steps.get(id(cache)) if self.enabled else None
        if step is not None and pos >= step.replay.positions:
            self._drop(id(cache))  # beyond its reach: eager now, recorded again next step
            return self.model.forward(ids, pos, True, cache)
        if step is None:
            if not self.enabled:
                return self.model.forward(ids, pos, True, cache)
            step, eager = self._record(ids, cache, id(cache), self.steps, MAX_RECORDINGS,
                                       lambda buf: self.model.run_ids(buf, 1, pos, cache))
            if step is None:  # no replay here: the step ran eagerly (or runs now)
                return eager if eager is not None else self.model.forward(ids, pos, True, cache)
            # its ids buffer already holds the token: recorded, not yet run
        else:
            self.model.ops.write(step.ids, ids)
        step.replay.replay(pos)
        self.replayed += 1
        return step.logits

    def can_record(self) -> bool:
        """Whether replay is on and the backend offers a recorder (it may still yield None:
        a GPU runtime without replay)."""
        from bitnet.hal import KernelBackend

        inner = getattr(self.model.ops, "inner", self.model.ops)
        return self.enabled and type(inner).recording is not KernelBackend.recording

    def decode_rows(self, tokens: np.ndarray, positions: np.ndarray, cache: Any,
                    tables: np.ndarray) -> Any:
        """One decode step of B sequences of one paged cache (``Transformer.forward_batch``)
        -> logits f32 [B, V] on the device."""
        from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for

        ids = np.asarray(tokens, dtype=np.int32)
        positions = np.asarray(positions, dtype=np.int32)
        width = blocks_for(self.model.n_ctx)
        tables = np.asarray(tables, dtype=np.int32)
        if not self.enabled or tables.shape[1] > width or positions.max() >= width * KV_BLOCK:
            return self.model.forward_batch(ids, positions, cache, tables)
        wide = np.zeros((len(ids), width), np.int32)
        wide[:, :tables.shape[1]] = tables
        key = (id(cache), len(ids))
        step = self.row_steps.pop(key, None)
        if step is not None:
            self.row_steps[key] = step  # the most recently used last (evicted last)
        if step is not None and positions.max() >= step.replay.positions:
            return self.model.forward_batch(ids, positions, cache, tables)
        if step is None:
            step, eager = self._record(
                ids, cache, key, self.row_steps, MAX_ROW_RECORDINGS,
                lambda buf: self.model.run_rows_ids(buf, positions, cache, wide))
            if step is None:
                return eager if eager is not None else self.model.forward_batch(
                    ids, positions, cache, tables)
        else:
            self.model.ops.write(step.ids, ids)
        step.replay.replay_rows(positions, wide)
        self.replayed += 1
        return step.logits

    def _record(self, ids: np.ndarray, cache: Any, key: Any, steps: dict, keep: int,
                run: Any) -> tuple[RecordedStep | None, Any]:
        """Record ``run(ids buffer)`` -> logits into ``steps[key]`` (keeping the newest
        ``keep``): (the new recording, None), or (None, the eager logits when it ran)."""
        b = self.model.ops
        if not callable(getattr(b, "recording", None)):
            self.enabled = False
            return None, None
        ids_buf = b.upload(ids)
        try:
            with b.recording() as recorded:
                logits = run(ids_buf)
        except Exception as exc:  # noqa: BLE001  (any capture failure: replay off, eager on)
            log.warning("bitnet: recording the decode step on %s failed (%s: %s); decoding "
                        "eagerly", getattr(b, "name", "backend"), type(exc).__name__, exc)
            self.enabled = False
            self.failure = f"{type(exc).__name__}: {exc}"
            return None, None
        if recorded is None:  # the backend cannot record: the step ran eagerly inside
            self.enabled = False
            return None, logits
        step = RecordedStep(recorded, ids_buf, logits, cache)
        steps[key] = step
        while len(steps) > keep:
            self._drop(next(iter(steps)), steps)  # the oldest
        return step, None

    def _drop(self, key: Any, steps: dict | None = None) -> None:
        """Forget a recording and free what the device holds for it."""
        step = (self.steps if steps is None else steps).pop(key)
        close = getattr(step.replay, "close", None)
        if close is not None:
            close()
