"""Live cross-check of arch ``llama`` ternary files against mainline llama.cpp.

The families llama.cpp runs as arch ``llama`` (docs/model-facts.md 4.2, 5.2): TriLM (TQ1_0 / TQ2_0,
untied, MHA), Llama3-8B-1.58 and Falcon3 / Falcon-E converted by llama.cpp (F16 or TQ2_0; GQA;
head dims 128 and 256; tied and untied heads). ``make_synthetic_model(arch="llama")`` writes the
Q/K rows in llama.cpp's RoPE-NORM order, which llama.cpp runs with NORM rope and bitnet permutes
back at load; the two must give the same logits (the quantized-file tolerances of
test_llama_cpp.py: cosine >= 0.995 everywhere, the same argmax wherever llama.cpp's top-2 margin
is clear) and the same greedy tokens up to llama.cpp's first step without a clear margin.

Runs only where ``llama_cpp`` is importable (docs/parity.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed: the live llama.cpp cross-check needs it "
           "(pip install llama-cpp-python; see docs/parity.md)")

from bitnet.core.generate import GenerationStats, generate_ids
from bitnet.core.sampling import Sampler, SamplingParams
from bitnet.hal.weight_formats import WeightFormat
from bitnet.testing.families import Family
from tests.crosscheck.summary import record
from bitnet.testing.parity import clear_margin, cosine_rows
from tests.crosscheck.session import FLASH_ATTN, SessionModels, available_backends

pytestmark = pytest.mark.slow

TQ2, TQ1, F16 = WeightFormat.TQ2_0, WeightFormat.TQ1_0, WeightFormat.F16
N_CTX = 64
N_TOKENS = 32
GREEDY_STEPS = 16

CASES = [
    Family("trilm-tq2_0", "llama", 512, 4, 4, 768, TQ2, tied=False, seed=31),
    Family("trilm-tq1_0", "llama", 768, 6, 6, 1024, TQ1, tied=False, seed=32, n_vocab=500),
    Family("llama3-8b-f16", "llama", 512, 4, 1, 1024, F16, tied=False, seed=33),
    Family("llama3-8b-tq2_0", "llama", 1024, 8, 2, 1536, TQ2, tied=False, seed=34),
    Family("falcon3-tq2_0", "llama", 768, 3, 1, 1024, TQ2, tied=False, seed=35),
    Family("falcon3-1b-f16-tied", "llama", 512, 2, 1, 768, F16, tied=True, seed=36),
]

BACKENDS = available_backends()
MODELS = SessionModels(N_CTX)


@pytest.fixture(scope="module", autouse=True)
def _release_llama_models():
    yield
    MODELS.close_llama()


@pytest.mark.parametrize("flash_attn", FLASH_ATTN)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_llama_arch_logits_match_llama_cpp(case: Family, backend: str, flash_attn: str,
                                           model_dir: Path) -> None:
    ids = case.tokens(N_TOKENS)
    theirs = MODELS.cached(("llama", case.name, flash_attn),
                           lambda: MODELS.llama(case, model_dir, flash_attn).logits(ids))
    mine = MODELS.cached(("ours", case.name, backend),
                         lambda: MODELS.ours(case, model_dir, backend).logits(ids))
    assert theirs.shape == mine.shape == (N_TOKENS, case.n_vocab)
    cos = cosine_rows(mine, theirs)
    clear = np.array([clear_margin(row) for row in theirs])
    same = mine.argmax(1) == theirs.argmax(1)
    record(case.name, backend, flash_attn, min_cos=float(cos.min()),
           min_cos_pos=int(cos.argmin()), max_abs=float(np.abs(mine - theirs).max()),
           argmax_same=int(same.sum()), positions=N_TOKENS, clear=int(clear.sum()),
           clear_same=int((same & clear).sum()), logit_std=float(theirs.std()))
    assert cos.min() >= 0.995, f"min cosine {cos.min():.6f} at position {cos.argmin()}"
    bad = np.flatnonzero(clear & ~same)
    assert bad.size == 0, f"argmax differs at clear-margin positions {bad.tolist()}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_llama_arch_greedy_matches_llama_cpp(case: Family, backend: str,
                                             model_dir: Path) -> None:
    prompt = case.tokens(8)
    theirs, rows = MODELS.llama(case, model_dir, "auto").greedy(prompt, GREEDY_STEPS)
    model = MODELS.ours(case, model_dir, backend)
    mine = list(generate_ids(model.transformer, prompt, Sampler(SamplingParams(temperature=0.0)),
                             GREEDY_STEPS, lambda _t: False, GenerationStats()))
    compared = 0
    for step, (a, b, row) in enumerate(zip(mine, theirs, rows)):
        if not clear_margin(row):
            break
        assert a == b, f"step {step}: we chose {a}, llama.cpp chose {b}"
        compared += 1
    identical = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), GREEDY_STEPS)
    record(case.name, backend, "auto", greedy_compared=compared, greedy_identical=identical,
           greedy_steps=GREEDY_STEPS)
