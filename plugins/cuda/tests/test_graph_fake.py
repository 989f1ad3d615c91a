"""CUDA graph record and replay (graph.py, CudaRuntime.record) on the fake driver, which models
capture: launches on a capturing stream are recorded, not run, and run when the instantiated
graph is launched; synchronous calls and pageable copies on a capturing stream fail as a real
capture fails. What this cannot show: that a real driver captures PyCUDA's launches the same
way (that needs a GPU: the conformance suite's replay check)."""

from __future__ import annotations

import numpy as np
import pytest

import fake_cuda
from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import i2s_pack
from bitnet.hal import WeightFormat, WeightTensor


def _weights(backend, rng):
    table = rng.standard_normal((32, 256)).astype(np.float32)
    embed = backend.load_weight(WeightTensor("token_embd.weight", WeightFormat.F16, 32, 256,
                                             quantize_rows(WeightFormat.F16, table)))
    values = rng.integers(-1, 2, (256, 256)).astype(np.int8)
    qkv = backend.load_weight(WeightTensor("blk.0.attn_qkv.weight", WeightFormat.I2_S, 256, 256,
                                           i2s_pack(values, 0.02)))
    norm = backend.upload(np.ones((1, 256), np.float32))
    return embed, qkv, norm


def _step(backend, weights, cache, ids, pos):
    """A decode step in miniature: embed the id, norm, a ternary matmul, rope and attention at
    pos (positions from the step buffer), the tied head."""
    embed, qkv, norm = weights
    h = backend.embed(embed, ids)
    x = backend.linear_ternary(qkv, backend.rmsnorm(h, norm, 1e-5))
    q = backend.rope(x, pos, 4, 64, 10000.0)
    a = backend.attention(q, q, x, cache, 0, pos, 4, 4, 64)
    return backend.linear_float(embed, backend.add(a, h))


def test_a_replayed_step_equals_the_eager_step_in_two_submissions(backend):
    rng = np.random.default_rng(4)
    weights = _weights(backend, rng)
    eager_cache = backend.kv_cache_alloc(1, 16, 4, 64)
    replay_cache = backend.kv_cache_alloc(1, 16, 4, 64)
    tokens = [3, 17, 5, 9, 30]
    for pos in range(2):  # a context before the recording, in both caches
        for cache in (eager_cache, replay_cache):
            _step(backend, weights, cache, backend.upload(np.array([tokens[pos]], np.int32)), pos)
    ids = backend.upload(np.array([tokens[2]], np.int32))
    launched = len(fake_cuda.LAUNCHES)
    with backend.recording() as recorded:
        logits = _step(backend, weights, replay_cache, ids, 2)
    assert recorded is not None and recorded.positions == 16
    assert len(fake_cuda.LAUNCHES) == launched  # captured, not run
    assert fake_cuda.GRAPHS and fake_cuda.EXECS
    for pos in range(2, 5):
        want = backend.download(_step(backend, weights, eager_cache,
                                      backend.upload(np.array([tokens[pos]], np.int32)), pos))
        before = backend.submission_count()
        backend.write(ids, np.array([tokens[pos]], np.int32))
        recorded.replay(pos)
        got = backend.download(logits)
        assert backend.submission_count() - before == 2  # the graph launch and the read
        np.testing.assert_array_equal(got, want)
    assert len(fake_cuda.GRAPH_LAUNCHES) == 3
    recorded.close()
    assert not fake_cuda.EXECS and not fake_cuda.GRAPHS


def test_writes_staged_for_a_replay_reach_eager_work_too(backend):
    """A small write while a recording lives waits for the next replay, but eager work that
    comes first sends it on its own: nothing reads a stale buffer."""
    a = backend.upload(np.zeros((1, 4), np.float32))
    with backend.recording() as recorded:
        backend.add(a, a)
    backend.write(a, np.arange(4, dtype=np.float32).reshape(1, 4))
    np.testing.assert_array_equal(backend.download(backend.add(a, a)),
                                  2 * np.arange(4, dtype=np.float32).reshape(1, 4))
    recorded.close()


def test_a_read_inside_a_recording_is_refused(backend):
    x = backend.upload(np.ones((1, 4), np.float32))
    with pytest.raises(RuntimeError, match="cannot be recorded"):
        with backend.recording():
            backend.download(backend.add(x, x))
    assert not any(s.captured is not None for s in fake_cuda.STREAMS.values())
    np.testing.assert_array_equal(backend.download(backend.add(x, x)), 2 * np.ones((1, 4)))


@pytest.mark.slow
def test_the_transformer_replays_decode_steps_bit_exactly(monkeypatch, tmp_path):
    """bitnet.core.replay on the demo model over the fake driver: replayed decode steps give
    the eager steps' logits bit for bit, and bench counts at most 2 host submissions a token
    (the graph launch with the id and position in its inbox, and the logits read)."""
    fake_cuda.install(monkeypatch)
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path))
    import bitnet
    from bitnet.cli.bench import bench_model
    from bitnet.testing.model_checks import decode_logits

    with bitnet.load(device="cuda") as model:
        assert model.backend.name == "cuda"
        t = model.transformer
        eager = decode_logits(t, replay=False)
        replayed = decode_logits(t, replay=True)
        assert t.replay.replayed == 5
        for want, got in zip(eager, replayed):
            np.testing.assert_array_equal(got, want)
        t.replay.enabled = True
        result = bench_model(model, 8, 6, 1)
        print("submissions_per_token", result["submissions_per_token"])
        assert result["submissions_per_token"] <= 2


@pytest.mark.slow
def test_the_servers_batched_steps_replay_bit_exactly(monkeypatch, tmp_path):
    """Batched decode steps (bitnet.core.replay.decode_rows, what the scheduler runs) over the
    fake driver: one graph per batch size, the same logits as the eager steps, and a replayed
    step costs the writes too large for the inbox (ids and positions of B > 4 rows; the block
    tables when they changed), the graph launch and the logits read."""
    fake_cuda.install(monkeypatch)
    monkeypatch.setenv("BITNET_CACHE_DIR", str(tmp_path))
    import bitnet
    from bitnet.hal.kv_blocks import KV_BLOCK

    batch, width = 6, 3
    with bitnet.load(device="cuda", progress=False) as model:
        t = model.transformer
        tables = np.arange(batch * width, dtype=np.int32).reshape(batch, width)[::-1].copy()

        def steps(replay: bool) -> tuple[list[np.ndarray], list[int]]:
            t.replay.enabled = replay
            t.replay.row_steps.clear()
            pool = t.new_cache(batch * width * KV_BLOCK)
            for r in range(batch):
                t.forward(np.arange(1, 3 + 2 * r, dtype=np.int32), 0, True, pool, tables[r])
            positions = np.array([2 + 2 * r for r in range(batch)], np.int32)
            out, costs = [], []
            for step in range(4):
                before = model.backend.submission_count()
                ids = np.arange(batch, dtype=np.int32) + 7 + step
                out.append(t.ops.download(t.replay.decode_rows(ids, positions, pool,
                                                               tables[:, :2])))
                costs.append(model.backend.submission_count() - before)
                positions += 1
            return out, costs

        eager, _ = steps(False)
        replayed, costs = steps(True)
        assert t.replay.failure is None and len(t.replay.row_steps) == 1
        for want, got in zip(eager, replayed):
            np.testing.assert_array_equal(got, want)
        print("submissions per replayed batched step", costs)
        assert max(costs[2:]) <= 4  # ids, positions, the graph launch, the read
