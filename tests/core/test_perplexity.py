"""bitnet.core.perplexity: llama-perplexity's method, checked against its definition computed
by hand from ``Model.logits`` on the bundled demo model (reference backend)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet.core.perplexity import perplexity

HELDOUT = json.loads((Path(__file__).parents[1] / "demo" / "heldout.json").read_text())
BOS = 1


@pytest.fixture(scope="module")
def model():
    with bitnet.load(device="reference", n_ctx=64) as m:
        yield m


def text_ids(n: int) -> list[int]:
    """n token ids of held-out text, paragraphs run together (no BOS / EOS between them)."""
    ids = [t for para in HELDOUT["ids"] for t in para]
    return ids[:n]


def by_hand(model, ids: list[int], n_ctx: int, bos: int | None) -> tuple[float, float, int]:
    """llama-perplexity's definition, spelled out: (ppl, its +/-, tokens scored)."""
    first = n_ctx // 2
    nll = []
    for c in range(len(ids) // n_ctx):
        chunk = list(ids[c * n_ctx:(c + 1) * n_ctx])
        inputs = [bos, *chunk[1:]] if bos is not None else chunk
        logits = model.logits(inputs).astype(np.float64)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            log_z = row.max() + math.log(np.exp(row - row.max()).sum())
            nll.append(log_z - row[chunk[j + 1]])
    v = np.asarray(nll)
    mean = v.mean()
    err = math.sqrt(((v * v).mean() - mean * mean) / (len(v) - 1))
    return math.exp(mean), math.exp(mean) * err, len(v)


def test_matches_the_definition(model) -> None:
    ids = text_ids(200)
    got = perplexity(model.transformer, ids, 48, BOS, progress=False)
    ppl, err, scored = by_hand(model, ids, 48, BOS)
    assert got.n_chunks == 4 and got.n_scored == scored == 4 * 23
    assert got.ppl == pytest.approx(ppl, rel=1e-6)
    assert got.ppl_err == pytest.approx(err, rel=1e-6)
    assert got.nll == pytest.approx(math.log(ppl), rel=1e-6)
    assert got.chunk_ppl[-1] == got.ppl and len(got.chunk_ppl) == 4
    assert got.n_tokens == 200 and got.n_ctx == 48


def test_each_chunk_starts_with_bos_unless_told_not_to(model) -> None:
    ids = text_ids(64)
    plain = perplexity(model.transformer, ids, 32, None, progress=False)
    assert plain.ppl == pytest.approx(by_hand(model, ids, 32, None)[0], rel=1e-6)
    with_bos = perplexity(model.transformer, ids, 32, BOS, progress=False)
    assert with_bos.ppl != plain.ppl


def test_batch_size_does_not_change_the_figure(model) -> None:
    ids = text_ids(48)
    whole = perplexity(model.transformer, ids, 24, BOS, progress=False)
    for n_batch in (5, 12, 1000):
        split = perplexity(model.transformer, ids, 24, BOS, n_batch=n_batch, progress=False)
        assert split.n_batch == min(n_batch, 24)
        assert split.ppl == pytest.approx(whole.ppl, rel=1e-4), n_batch


def test_chunks_and_first_position(model) -> None:
    ids = text_ids(200)
    some = perplexity(model.transformer, ids, 32, BOS, n_chunks=2, progress=False)
    assert some.n_chunks == 2 and some.n_scored == 2 * 15
    every = perplexity(model.transformer, ids, 32, None, first=0, progress=False)
    assert every.n_scored == 6 * 31  # first=0 scores every prediction of a chunk


def test_model_perplexity_tokenizes_text_with_bos(model) -> None:
    text = " ".join(HELDOUT["paragraphs"][:3])
    ids = model.tokenizer.encode(text)
    assert ids[0] == BOS and len(ids) >= 128
    got = model.perplexity(text, n_ctx=32, n_chunks=2, progress=False)
    assert got.ppl == pytest.approx(by_hand(model, ids[:64], 32, BOS)[0], rel=1e-6)
    assert model.perplexity(ids, n_ctx=32, n_chunks=2, progress=False).ppl == got.ppl
    # the default chunk is llama.cpp's 512, at most what load allocated
    assert model.perplexity(text, n_chunks=1, progress=False).n_ctx == 64


def test_bad_arguments_are_clear_errors(model) -> None:
    with pytest.raises(ValueError, match="only 100 tokens.*at least 128"):
        perplexity(model.transformer, text_ids(100), 64, BOS, progress=False)
    with pytest.raises(ValueError, match="exceeds the context allocated at load"):
        perplexity(model.transformer, text_ids(300), 128, BOS, progress=False)
    with pytest.raises(ValueError, match="token id 99999 is outside the vocabulary"):
        perplexity(model.transformer, [99999] * 64, 32, BOS, progress=False)
    with pytest.raises(ValueError, match="n_ctx must be at least 2"):
        perplexity(model.transformer, text_ids(64), 1, BOS, progress=False)
    with pytest.raises(ValueError, match="first scored position"):
        perplexity(model.transformer, text_ids(64), 32, BOS, first=31, progress=False)
