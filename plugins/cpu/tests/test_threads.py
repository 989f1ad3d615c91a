"""The default thread counts (bitnet_cpu/threads.py): every core for prompts, the bandwidth
knee for decode."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.hal import CreateOptions

from bitnet_cpu import threads
from conftest import CPU


@pytest.mark.parametrize("cores, want", [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]),
                                         (16, [1, 2, 4, 8, 16])])
def test_candidates_double_up_to_all_cores(cores, want):
    assert threads.candidates(cores) == want


@pytest.mark.parametrize("curve, want", [
    ({1: 12.0, 2: 22.0, 4: 38.0, 8: 43.0, 16: 44.0}, 8),  # a server bus: full at 8 of 16
    ({1: 20.0, 2: 39.0, 4: 60.0, 8: 80.0, 16: 120.0}, 16),  # still scaling: every core
    ({1: 30.0, 2: 30.5, 4: 29.0, 8: 30.0, 16: 28.0}, 1),  # one core fills it
])
def test_knee_is_the_fewest_threads_near_the_best_read_rate(curve, want):
    asked = []

    def bandwidth(t: int) -> float:
        asked.append(t)
        return curve[t]

    assert threads.knee(16, bandwidth) == want
    assert asked == [1, 2, 4, 8, 16]
    assert threads.knee(1, bandwidth) == 1


def test_read_bandwidth_is_a_positive_rate():
    assert threads.read_bandwidth(1, np.ones(1 << 20, np.uint8), passes=1) > 0


def test_few_cores_decode_on_all_of_them_without_a_probe(monkeypatch):
    def no_probe(*args):
        raise AssertionError("probed")

    monkeypatch.setattr(threads, "knee", no_probe)
    threads.decode_threads.cache_clear()
    assert [threads.decode_threads(c) for c in (1, 2, threads.SMALL)] == [1, 2, threads.SMALL]
    threads.decode_threads.cache_clear()


def test_default_backend_decodes_on_the_knee_and_prompts_on_every_core():
    from bitnet_cpu.descriptor import descriptor, physical_cores

    b = descriptor.create(CPU, CreateOptions())
    assert b.threads == physical_cores()
    assert b.decode_threads == threads.decode_threads(physical_cores()) <= b.threads
    chosen = descriptor.create(CPU, CreateOptions(threads=3))  # the user's count: everywhere
    assert chosen.threads == chosen.decode_threads == 3
    assert b.info()["decode_threads"] == b.decode_threads
