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
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("bitnet")
MAX_RECORDINGS = 4  # caches with a recording kept at once (generate and bench use one)


@dataclass
class RecordedStep:
    replay: Any  # the backend's recording: replay(pos), positions
    ids: Any  # int32 [1] device buffer the recorded embed reads
    logits: Any  # f32 [1, V] device buffer the recorded head writes
    cache: Any  # the KV cache it writes (held: its id keys the recording and is not reused)


class DecodeReplay:
    """Decode steps of one Transformer, replayed per KV cache where the backend records."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.enabled = os.environ.get("BITNET_REPLAY", "1") != "0"
        self.steps: dict[int, RecordedStep] = {}  # id(cache) -> its recording
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
            step, eager = self._record(ids, pos, cache)
            if step is None:  # no replay here: the step ran eagerly (or runs now)
                return eager if eager is not None else self.model.forward(ids, pos, True, cache)
            # its ids buffer already holds the token: recorded, not yet run
        else:
            self.model.ops.write(step.ids, ids)
        step.replay.replay(pos)
        self.replayed += 1
        return step.logits

    def _record(self, ids: np.ndarray, pos: int,
                cache: Any) -> tuple[RecordedStep | None, Any]:
        """(the new recording, None), or (None, the eager logits when the step ran)."""
        b = self.model.ops
        if not callable(getattr(b, "recording", None)):
            self.enabled = False
            return None, None
        ids_buf = b.upload(ids)
        try:
            with b.recording() as recorded:
                logits = self.model.run_ids(ids_buf, 1, pos, cache)
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
        self.steps[id(cache)] = step
        while len(self.steps) > MAX_RECORDINGS:
            self._drop(next(iter(self.steps)))  # the oldest
        return step, None

    def _drop(self, key: int) -> None:
        """Forget a recording and free what the device holds for it."""
        step = self.steps.pop(key)
        close = getattr(step.replay, "close", None)
        if close is not None:
            close()
