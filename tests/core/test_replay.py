"""bitnet.core.replay over a fake model and backend: when a step is recorded, replayed, run
eagerly, recorded again, and what is freed. That replayed numbers equal eager ones is checked on
real runtimes (bitnet.testing.model_checks, the validation suite's replay cases)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from bitnet.core import replay as replay_module
from bitnet.core.replay import DecodeReplay


class FakeRecording:
    def __init__(self, log: list, positions: int) -> None:
        self.log = log
        self.positions = positions
        self.closed = False

    def replay(self, pos: int) -> None:
        self.log.append(("replay", pos))

    def close(self) -> None:
        self.closed = True


class FakeOps:
    name = "fake"

    def __init__(self, log: list, can_record: bool = True, reach: int = 100) -> None:
        self.log = log
        self.can_record = can_record
        self.reach = reach
        self.recordings: list[FakeRecording] = []

    def upload(self, array):
        return np.array(array)

    def write(self, buf, array):
        buf[...] = array
        self.log.append(("write", int(array[0])))

    @contextmanager
    def recording(self):
        if not self.can_record:
            yield None
            return
        rec = FakeRecording(self.log, self.reach)
        self.recordings.append(rec)
        self.log.append(("record",))
        yield rec


class FakeModel:
    def __init__(self, ops: FakeOps) -> None:
        self.ops = ops

    def forward(self, ids, pos, last_only, cache):
        self.ops.log.append(("eager", pos))
        return "eager-logits"

    def run_ids(self, ids, n, pos, cache):
        if self.ops.can_record:
            return "recorded-logits"
        self.ops.log.append(("eager", pos))
        return "eager-logits"


def test_recorded_once_then_replayed_with_each_token_and_position():
    log: list = []
    model = FakeModel(FakeOps(log))
    replay = DecodeReplay(model)
    cache = object()
    assert replay.decode(7, 3, cache) == "recorded-logits"
    assert replay.decode(8, 4, cache) == "recorded-logits"
    assert log == [("record",), ("replay", 3), ("write", 8), ("replay", 4)]
    assert replay.replayed == 2


def test_without_recording_every_step_runs_eagerly_once():
    log: list = []
    replay = DecodeReplay(FakeModel(FakeOps(log, can_record=False)))
    cache = object()
    assert replay.decode(7, 3, cache) == "eager-logits"
    assert replay.decode(8, 4, cache) == "eager-logits"
    assert log == [("eager", 3), ("eager", 4)]  # the first step is not run twice
    assert not replay.enabled


def test_a_step_beyond_the_reach_runs_eagerly_and_is_recorded_again():
    log: list = []
    ops = FakeOps(log, reach=5)
    replay = DecodeReplay(FakeModel(ops))
    cache = object()
    replay.decode(1, 4, cache)
    replay.decode(2, 5, cache)  # position 5 is beyond: eager, the recording freed
    replay.decode(3, 6, cache)  # recorded again (a table that grew would now cover it)
    assert log == [("record",), ("replay", 4), ("eager", 5), ("record",), ("replay", 6)]
    assert ops.recordings[0].closed and not ops.recordings[1].closed


def test_recordings_are_bounded_and_the_oldest_freed():
    log: list = []
    ops = FakeOps(log)
    replay = DecodeReplay(FakeModel(ops))
    caches = [object() for _ in range(replay_module.MAX_RECORDINGS + 1)]
    for cache in caches:
        replay.decode(1, 0, cache)
    assert len(replay.steps) == replay_module.MAX_RECORDINGS
    assert ops.recordings[0].closed
    assert not any(r.closed for r in ops.recordings[1:])


def test_a_failing_recording_turns_replay_off_with_one_log_line(caplog):
    log: list = []
    ops = FakeOps(log)

    @contextmanager
    def broken():
        raise RuntimeError("no capture here")
        yield

    ops.recording = broken
    replay = DecodeReplay(FakeModel(ops))
    cache = object()
    with caplog.at_level("WARNING", logger="bitnet"):
        assert replay.decode(1, 0, cache) == "eager-logits"
        assert replay.decode(2, 1, cache) == "eager-logits"
    assert [r.message for r in caplog.records if "recording" in r.message] != []
    assert len([r for r in caplog.records if "recording" in r.message]) == 1
    assert not replay.enabled


def test_replay_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("BITNET_REPLAY", "0")
    log: list = []
    replay = DecodeReplay(FakeModel(FakeOps(log)))
    replay.decode(1, 0, object())
    assert log == [("eager", 0)]
