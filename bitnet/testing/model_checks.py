"""Whole models through ``bitnet.load(device=<backend under test>)``: the shared fixtures' logits,
the reference backend's logits, greedy tokens, a decode step that moves only ids in and logits
out, and a small model of every ternary family (bitnet.testing.families: arch llama with RoPE
NORM files, head dims 96 / 100 / 128 / 256, GQA 1..4) against an independent numpy forward.

Collected by the conformance plugin (``bitnet.testing.conformance``) under ``<conftest>::model``
for backends whose conftest opts in with ``conformance_extras = (..., "model")``. The fixture
checks need the shared fixtures (bitnet.testing.fixtures.FIXTURES: models/, logits/,
manifest.json) and are skipped without them; the family checks need nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitnet.testing.fixtures import FIXTURES
from bitnet.testing.parity import clear_margin, cosine_rows

TINY = ["tiny-b158-f16", "tiny-b158-i2_s", "tiny-bitnet-f16", "tiny-bitnet-tq1_0",
        "tiny-bitnet-tq2_0"]

pytestmark = [pytest.mark.slow]
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "manifest.json").exists(),
                                    reason="no shared fixtures")


def _engine(name: str) -> str:
    return "fork" if "b158" in name else "mainline"



def _device(backend) -> str:
    """The device spec that makes bitnet.load open the backend under test's device."""
    return f"{backend.device.backend}:{backend.device.index}"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIXTURES / "manifest.json").read_text())


@pytest.fixture(scope="module")
def bitnet_api():
    return pytest.importorskip("bitnet.core.api", reason="bitnet.load is not there yet")


@needs_fixtures
@pytest.mark.parametrize("name", TINY)
def test_fixture_logits(bitnet_api, manifest, conformance_backend, name):
    tokens = manifest["inputs"]["tiny_tokens"]
    path = FIXTURES / "models" / f"{name}.gguf"
    with bitnet_api.load(path, device=_device(conformance_backend)) as model:
        assert model.backend.name == conformance_backend.name
        got = model.logits(tokens)
    with bitnet_api.load(path, device="reference") as model:
        want = model.logits(tokens)
    engine = np.load(FIXTURES / "logits" / f"{name}.{_engine(name)}.batch.npy")
    # The reference backend: same argmax everywhere, logits equal up to float-order noise that
    # f16 roundings (q, KV cache) and int8 activation roundings amplify (README: tolerances).
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert cosine_rows(got, want).min() >= 0.99999
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
    # The home engine (fixtures/README.md): cosine >= 0.9999 for F16, >= 0.995 quantized.
    floor = 0.9999 if "f16" in name else 0.995
    assert cosine_rows(got, engine).min() >= floor


@needs_fixtures
@pytest.mark.parametrize("name", ["tiny-bitnet-tq2_0", "tiny-b158-i2_s"])
def test_greedy_tokens_and_decode_traffic(bitnet_api, manifest, conformance_backend, monkeypatch,
                                          name):
    greedy = manifest["greedy"][f"{name}.{_engine(name)}"]
    backend_class = type(conformance_backend)
    moved = []
    upload, download = backend_class.upload, backend_class.download

    def counted_upload(self, array):
        moved.append(("in", np.asarray(array).shape))
        return upload(self, array)

    def counted_download(self, buf):
        moved.append(("out", tuple(buf.shape)))
        return download(self, buf)

    monkeypatch.setattr(backend_class, "upload", counted_upload)
    monkeypatch.setattr(backend_class, "download", counted_download)
    write = getattr(backend_class, "write", None)
    if write is not None:  # a replayed decode step writes its id into the recorded buffer

        def counted_write(self, buf, array):
            moved.append(("in", np.asarray(array).shape))
            return write(self, buf, array)

        monkeypatch.setattr(backend_class, "write", counted_write)
    path = FIXTURES / "models" / f"{name}.gguf"
    with bitnet_api.load(path, device=_device(conformance_backend)) as model:
        moved.clear()  # loading uploads the norm weights
        model.generate(greedy["prompt"], max_tokens=len(greedy["generated"]), temperature=0,
                       ignore_eos=True)
        tokens = model.last_stats.tokens
        vocab = model.config.n_vocab
    # equal up to the first step whose top-2 margin is not clear (fixtures README: 0.5)
    margins = greedy["top1_minus_top2"]
    clear = next((i for i, m in enumerate(margins) if m < 0.5), len(margins))
    assert tokens[:clear] == greedy["generated"][:clear]
    # prefill: the prompt ids in, logits out; each decode step: one id in, one logits row out
    assert moved[0] == ("in", (len(greedy["prompt"]),))
    assert moved[1] == ("out", (1, vocab))
    steps = moved[2:]
    assert len(steps) == 2 * (len(tokens) - 1)
    assert steps == [("in", (1,)), ("out", (1, vocab))] * (len(tokens) - 1)


@pytest.fixture(scope="module")
def family_files(tmp_path_factory) -> dict:
    from bitnet.testing.families import FAMILIES

    root = tmp_path_factory.mktemp("families")
    return {f.name: f.write(root / f"{f.name}.gguf") for f in FAMILIES}


def _family_ids() -> list[str]:
    from bitnet.testing.families import FAMILIES

    return [f.name for f in FAMILIES]


@pytest.mark.parametrize("name", _family_ids())
def test_family_matches_the_numpy_forward(bitnet_api, conformance_backend, family_files, name):
    """Median cosine >= 0.999 against the oracle, the same argmax where its margin is clear."""
    from bitnet.testing.families import FAMILIES, oracle_logits

    family = next(f for f in FAMILIES if f.name == name)
    tokens = family.tokens()
    path = family_files[name]
    with bitnet_api.load(path, device=_device(conformance_backend), progress=False) as model:
        assert model.backend.name == conformance_backend.name
        got = model.logits(tokens)
    want = oracle_logits(path, tokens)
    cos = cosine_rows(got, want)
    assert np.median(cos) >= 0.999 and cos.min() >= 0.99, cos
    clear = np.array([clear_margin(row) for row in want])
    bad = np.flatnonzero(clear & (got.argmax(1) != want.argmax(1)))
    assert bad.size == 0, f"argmax differs at clear-margin positions {bad.tolist()}"


def decode_logits(t, replay: bool, prompt: tuple[int, ...] = (1, 40, 41, 42),
                  steps: int = 5) -> list[np.ndarray]:
    """Greedy logits of a prompt and ``steps`` decode steps on a fresh cache of transformer
    ``t``, with its decode-step replay on or off (the recordings dropped first)."""
    from bitnet.core.generate import decode_one, prefill

    t.replay.enabled = replay
    t.replay.steps.clear()
    t._cache = t.new_cache()
    logits = [prefill(t, list(prompt))[0]]
    for pos in range(len(prompt), len(prompt) + steps):
        logits.append(decode_one(t, int(np.argmax(logits[-1])), pos))
    return logits


def test_replayed_decode_steps_equal_eager_steps(bitnet_api, conformance_backend):
    """The demo model's decode steps replayed from one recording (bitnet.core.replay) give the
    eager steps' logits bit for bit; a backend without replay runs both eagerly. A backend
    whose recording raises fails here (users would only see one log line and eager speed)."""
    with bitnet_api.load(device=_device(conformance_backend)) as model:
        t = model.transformer
        eager = decode_logits(t, replay=False)
        t.replay.failure = None
        replayed = decode_logits(t, replay=True)
        assert t.replay.failure is None, f"recording the decode step failed: {t.replay.failure}"
        for want, got in zip(eager, replayed):
            np.testing.assert_array_equal(got, want)


MAX_DISPATCHES_PER_LAYER = 8  # a decode token's block run whole on a GPU backend (issue 15)


def test_whole_block_decode_equals_the_ops(bitnet_api, conformance_backend):
    """Where the backend runs a decode token's block whole (``prepare_layer`` /
    ``decode_layer``), the demo model's decode steps give the op-by-op steps' logits bit for
    bit, eagerly and replayed; on a GPU backend (a ``runtime``) each whole block is at most
    MAX_DISPATCHES_PER_LAYER dispatches. Skipped where no block runs whole."""
    with bitnet_api.load(device=_device(conformance_backend), progress=False) as model:
        t = model.transformer
        fused = t.fused
        if all(layer is None for layer in fused):
            pytest.skip(f"{conformance_backend.name} runs no block whole")
        ops = t.ops  # the model's counting wrapper: its decode_layer is what the model calls
        runtime = getattr(ops.inner, "runtime", None)
        per_call: list[int] = []
        if runtime is not None:
            inner_decode = ops.decode_layer
            dispatch = runtime.dispatch
            count = [0]

            def counted_dispatch(*args, **kwargs):
                count[0] += 1
                return dispatch(*args, **kwargs)

            def counted_decode(*args, **kwargs):
                before = count[0]
                out = inner_decode(*args, **kwargs)
                per_call.append(count[0] - before)
                return out

            runtime.dispatch = counted_dispatch
            ops.decode_layer = counted_decode
        try:
            whole = decode_logits(t, replay=False)
            replayed = decode_logits(t, replay=True)
        finally:
            if runtime is not None:
                del runtime.dispatch
                ops.decode_layer = inner_decode
        t.fused = [None] * len(fused)
        try:
            by_ops = decode_logits(t, replay=False)
        finally:
            t.fused = fused
        for want, got, again in zip(by_ops, whole, replayed):
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            np.testing.assert_array_equal(again.view(np.uint32), want.view(np.uint32))
        if runtime is not None:
            assert per_call and max(per_call) <= MAX_DISPATCHES_PER_LAYER, per_call


def test_batched_decode_in_a_paged_pool_matches_decoding_alone(bitnet_api, conformance_backend):
    """What the server runs: sequences of one paged pool (shuffled blocks, histories across
    block edges) decoded together (Transformer.forward_batch, attention_rows) give each one
    the logits of decoding it alone in a cache of its own, to float-order noise (the GPU
    backends give the same bits), with the same argmax."""
    from bitnet.hal.kv_blocks import KV_BLOCK

    prompts = [[1, 15, 27, 3], [1, 9], [1, 40, 41, 42, 43, 44, 45] * 3, [1]]
    with bitnet_api.load(device=_device(conformance_backend), progress=False) as model:
        t = model.transformer
        alone = []
        for p in prompts:
            alone.append(t.new_cache(4 * KV_BLOCK))
            t.forward(np.asarray(p, np.int32), 0, True, alone[-1])
        pool = t.new_cache(len(prompts) * 4 * KV_BLOCK)
        tables = np.random.default_rng(5).permutation(len(prompts) * 4).astype(np.int32)
        tables = tables.reshape(len(prompts), 4)
        for p, table in zip(prompts, tables):
            t.forward(np.asarray(p, np.int32), 0, True, pool, table)
        positions = np.array([len(p) for p in prompts], np.int32)
        for step in range(3):
            ids = np.arange(len(prompts), dtype=np.int32) + 5 + step
            together = t.ops.download(t.forward_batch(ids, positions, pool, tables))
            for r, cache in enumerate(alone):
                one = t.ops.download(t.forward(ids[r:r + 1], int(positions[r]), True, cache))[0]
                assert together[r].argmax() == one.argmax()
                assert np.abs(together[r] - one).max() <= 1e-5 * np.abs(one).max()
            positions = positions + 1


def test_replayed_batched_steps_equal_eager_batched_steps(bitnet_api, conformance_backend):
    """The server's batched decode steps replayed (bitnet.core.replay: one recording per pool
    and batch size, tables widened to the context's width) give the eager steps' logits bit for
    bit, as the batch shrinks and the rows cross block edges. A backend that records replays
    every step; one without replay runs them eagerly; one whose recording raises fails here."""
    from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for

    prompts = [[1, 15, 27, 3] * 3 + [5, 6], [1, 9], [1, 40, 41, 42, 43, 44, 45] * 2]
    with bitnet_api.load(device=_device(conformance_backend), progress=False) as model:
        t = model.transformer
        width = blocks_for(len(max(prompts, key=len)) + 8)
        tables = np.random.default_rng(7).permutation(len(prompts) * width).astype(np.int32)
        tables = tables.reshape(len(prompts), width)

        def steps(replay: bool) -> tuple[list[np.ndarray], int]:
            t.replay.enabled, t.replay.failure = replay, None
            t.replay.row_steps.clear()
            before = t.replay.replayed
            pool = t.new_cache(len(prompts) * width * KV_BLOCK)
            for p, table in zip(prompts, tables):
                t.forward(np.asarray(p, np.int32), 0, True, pool, table)
            positions = np.array([len(p) for p in prompts], np.int32)
            rows, out = [0, 1, 2], []
            for step in range(6):
                if step == 3:
                    rows = [0, 2]  # a sequence finished: a batch of two from here
                used = blocks_for(int(positions[rows].max()) + 1)
                ids = np.asarray(rows, np.int32) + 5 + step
                out.append(t.ops.download(t.replay.decode_rows(
                    ids, positions[rows], pool, tables[rows, :used])))
                positions[rows] += 1
            assert t.replay.failure is None, f"recording a batched step failed: " \
                                             f"{t.replay.failure}"
            return out, t.replay.replayed - before

        eager, _ = steps(False)
        replayed, count = steps(True)
        assert count == (len(replayed) if t.replay.can_record() else 0)
        for want, got in zip(eager, replayed):
            np.testing.assert_array_equal(got, want)


def test_the_scheduler_gives_the_same_tokens_with_replay_on_and_off(bitnet_api,
                                                                    conformance_backend):
    """What `bitnet serve` runs: requests of different lengths through the scheduler (chunked
    prefill, batched decode in a paged pool, the batch shrinking as requests finish) give the
    same tokens with decode steps replayed and eager."""
    from bitnet.core.sampling import SamplingParams
    from bitnet.server.scheduler import Request, Scheduler

    prompts = [[1, 15, 27, 3, 8], [1, 9], [1, 40, 41, 42, 43, 44, 45] * 3, [1, 2, 3]]
    with bitnet_api.load(device=_device(conformance_backend), progress=False) as model:
        def scheduled(replay: bool) -> list[list[int]]:
            t = model.transformer
            t.replay.enabled, t.replay.failure = replay, None
            t.replay.row_steps.clear()
            sched = Scheduler(model, start=False, max_batch=4, prefill_chunk=8)
            sched.pace.budget = lambda limit, *_: limit  # whole chunks: the same in both runs
            got: list[list[int]] = [[] for _ in prompts]
            for i, p in enumerate(prompts):
                sched.submit(Request(p, SamplingParams(temperature=0.0 if i % 2 else 0.8,
                                                       seed=i), 6 + 3 * i,
                                     lambda ev, i=i: ev.token is None or got[i].append(ev.token),
                                     ignore_eos=True))
            while sched.busy:
                sched.step()
            assert t.replay.failure is None, t.replay.failure
            return got

        eager = scheduled(False)
        assert scheduled(True) == eager
        assert [len(g) for g in eager] == [6 + 3 * i for i in range(len(prompts))]
