"""Live cross-check against mainline llama.cpp (llama-cpp-python) on fresh random models.

For several shapes, both ternary types llama.cpp reads (TQ2_0, TQ1_0) and several embedding types,
``make_synthetic_model`` writes an arch ``bitnet`` file (SiLU gating, tied lm_head); llama.cpp and
our backends then give logits for the same tokens, compared with the parity fixtures' tolerances
for quantized files (shared/fixtures/README.md): cosine >= 0.995 at every position, the same argmax
wherever llama.cpp's top-2 margin is clear (above 0.5 and a quarter of the logits' std), and the
same greedy tokens up to llama.cpp's first step without a clear margin. Each comparison runs with
llama.cpp's flash attention off and on (its default "auto" is "on" on CPU).

Runs only where ``llama_cpp`` is importable; docs/parity.md has the command and the figures.
Set BITNET_CROSSCHECK_REPORT=path.json to also write the per-model figures there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed: the live llama.cpp cross-check needs it "
           "(pip install llama-cpp-python; see docs/parity.md)")

from bitnet.core.generate import GenerationStats, generate_ids
from bitnet.testing.synthetic import make_synthetic_model
from bitnet.core.sampling import Sampler, SamplingParams
from bitnet.hal.weight_formats import WeightFormat
from bitnet.testing.parity import clear_margin, cosine_rows
from tests.crosscheck.llama_cpp_runner import LlamaCppModel
from tests.crosscheck.session import FLASH_ATTN, SessionModels, available_backends
from tests.crosscheck.summary import record

pytestmark = pytest.mark.slow

N_TOKENS = 40  # logits sequence: BOS + 39 random ids
PROMPT_TOKENS = 8  # greedy: BOS + 7 of those ids, then GREEDY_STEPS argmax steps,
GREEDY_STEPS = 24  # from GREEDY_PROMPTS different prompts
GREEDY_PROMPTS = 3
N_CTX = 256
BOS = 1  # llama_vocab(): <unk>=0, <s>=1, </s>=2


@dataclass(frozen=True)
class Case:
    """One random model: shape, ternary type, embedding (= tied lm_head) type, seed."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    n_vocab: int
    weights: WeightFormat
    embed: WeightFormat
    seed: int

    def write(self, path: Path) -> Path:
        return make_synthetic_model(
            path, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads, d_ff=self.d_ff, n_vocab=self.n_vocab, n_ctx=N_CTX,
            arch="bitnet", weight_format=self.weights, embed_format=self.embed, seed=self.seed)

    def tokens(self) -> list[int]:
        rng = np.random.default_rng(20261122 + self.seed)
        return [BOS] + rng.integers(3, self.n_vocab, N_TOKENS - 1).tolist()


TQ2, TQ1 = WeightFormat.TQ2_0, WeightFormat.TQ1_0
F16, BF16, Q8, Q6K = WeightFormat.F16, WeightFormat.BF16, WeightFormat.Q8_0, WeightFormat.Q6_K

# head_dim 64 unless noted; GQA where n_kv_heads < n_heads; d_ff a multiple of 256
CASES = [
    Case("tiny-tq2-q6k", 256, 2, 4, 2, 768, 512, TQ2, Q6K, 11),  # the writer's "tiny" shape
    Case("d256-l1-mha-v300-tq1-f16", 256, 1, 4, 4, 512, 300, TQ1, F16, 12),
    Case("mid-tq1-q8", 512, 3, 8, 2, 1280, 1000, TQ1, Q8, 13),  # the writer's "mid" shape
    Case("d512-l2-hd128-v2000-tq2-f16", 512, 2, 4, 2, 1536, 2000, TQ2, F16, 14),
    Case("d512-l1-v800-tq2-bf16", 512, 1, 8, 8, 1024, 800, TQ2, BF16, 15),
    Case("d768-l2-v1500-tq2-q8", 768, 2, 12, 4, 2048, 1500, TQ2, Q8, 16),
    Case("d768-l3-v2000-tq1-q6k", 768, 3, 12, 3, 2304, 2000, TQ1, Q6K, 17),
]


BACKENDS = available_backends()
MODELS = SessionModels(N_CTX)


def llama(case: Case, model_dir: Path, flash_attn: str) -> LlamaCppModel:
    return MODELS.llama(case, model_dir, flash_attn)


def ours(case: Case, model_dir: Path, backend: str):
    return MODELS.ours(case, model_dir, backend)


cached = MODELS.cached


@pytest.fixture(scope="module", autouse=True)
def _release_llama_models():
    yield
    MODELS.close_llama()


@pytest.mark.parametrize("flash_attn", FLASH_ATTN)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_logits_match_llama_cpp(case: Case, backend: str, flash_attn: str,
                                model_dir: Path) -> None:
    ids = case.tokens()
    theirs = cached(("llama", case.name, flash_attn),
                    lambda: llama(case, model_dir, flash_attn).logits(ids))
    mine = cached(("ours", case.name, backend),
                  lambda: ours(case, model_dir, backend).logits(ids))
    assert theirs.shape == mine.shape == (N_TOKENS, case.n_vocab)
    assert np.isfinite(theirs).all() and np.isfinite(mine).all()
    cos = cosine_rows(mine, theirs)
    clear = np.array([clear_margin(row) for row in theirs])
    same = mine.argmax(1) == theirs.argmax(1)
    record(case.name, backend, flash_attn, case=case, min_cos=float(cos.min()),
           min_cos_pos=int(cos.argmin()), max_abs=float(np.abs(mine - theirs).max()),
           argmax_same=int(same.sum()), positions=N_TOKENS, clear=int(clear.sum()),
           clear_same=int((same & clear).sum()), logit_std=float(theirs.std()))
    assert cos.min() >= 0.995, f"min cosine {cos.min():.6f} at position {cos.argmin()}"
    bad = np.flatnonzero(clear & ~same)
    assert bad.size == 0, (f"argmax differs at clear-margin positions {bad.tolist()} "
                           f"(llama.cpp {theirs.argmax(1)[bad].tolist()}, "
                           f"ours {mine.argmax(1)[bad].tolist()})")


def greedy_prompts(case: Case) -> list[list[int]]:
    """BOS + PROMPT_TOKENS - 1 ids from three places of the logits sequence: more prompts give
    more steps with a clear margin to compare."""
    ids = case.tokens()[1:]
    width = PROMPT_TOKENS - 1
    return [[BOS] + ids[k * width:(k + 1) * width] for k in range(GREEDY_PROMPTS)]


@pytest.mark.parametrize("flash_attn", FLASH_ATTN)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_greedy_matches_llama_cpp_up_to_the_first_near_tie(case: Case, backend: str,
                                                           flash_attn: str,
                                                           model_dir: Path) -> None:
    def run_ours(prompt: list[int]) -> list[int]:
        model = ours(case, model_dir, backend)
        sampler = Sampler(SamplingParams(temperature=0.0))
        return list(generate_ids(model.transformer, prompt, sampler, GREEDY_STEPS,
                                 lambda _t: False, GenerationStats()))

    compared = 0
    identical = 0
    for k, prompt in enumerate(greedy_prompts(case)):
        theirs, rows = cached(("llama-greedy", case.name, flash_attn, k),
                              lambda p=prompt: llama(case, model_dir, flash_attn).greedy(
                                  p, GREEDY_STEPS))
        mine = cached(("ours-greedy", case.name, backend, k), lambda p=prompt: run_ours(p))
        assert len(mine) == len(theirs) == GREEDY_STEPS
        # once llama.cpp's margin is not clear either engine may pick the other token and
        # the histories part ways; compare up to there
        for step, (a, b, row) in enumerate(zip(mine, theirs, rows)):
            if not clear_margin(row):
                break
            assert a == b, f"prompt {k} step {step}: we chose {a}, llama.cpp chose {b}"
            compared += 1
        identical += next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b),
                          GREEDY_STEPS)
    record(case.name, backend, flash_attn, greedy_compared=compared,
           greedy_identical=identical, greedy_steps=GREEDY_PROMPTS * GREEDY_STEPS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_llama_cpp_flash_attention_auto_is_one_of_off_and_on(case: Case,
                                                              model_dir: Path) -> None:
    """Which path llama.cpp's default takes here, and how far its two paths are apart."""
    ids = case.tokens()
    runs = {fa: cached(("llama", case.name, fa), lambda fa=fa: llama(case, model_dir, fa)
                       .logits(ids)) for fa in ("off", "on", "auto")}
    same_as = [fa for fa in ("off", "on") if np.array_equal(runs["auto"], runs[fa])]
    record(case.name, "llama.cpp", "auto", auto_same_as=",".join(same_as) or "neither",
           on_vs_off_max_abs=float(np.abs(runs["on"] - runs["off"]).max()),
           on_vs_off_min_cos=float(cosine_rows(runs["on"], runs["off"]).min()))
    assert same_as, "flash attention auto gave logits equal to neither off nor on"


@pytest.mark.parametrize("backend", BACKENDS)
def test_tq1_0_and_tq2_0_of_the_same_weights_give_the_same_logits(backend: str,
                                                                  model_dir: Path) -> None:
    """The two ternary encodings hold the same values and scales, so each engine must give
    bitwise-identical logits for both (the fixtures found this for llama.cpp)."""
    pair = [Case(f"pair-{fmt.value}", 512, 2, 8, 2, 1280, 700, fmt, Q8, 21) for fmt in (TQ1, TQ2)]
    ids = pair[0].tokens()
    theirs = [llama(case, model_dir, "auto").logits(ids) for case in pair]
    mine = [ours(case, model_dir, backend).logits(ids) for case in pair]
    record("pair-tq1_0-vs-tq2_0", backend, "auto",
           tq1_vs_tq2_llama_max_abs=float(np.abs(theirs[0] - theirs[1]).max()),
           tq1_vs_tq2_ours_max_abs=float(np.abs(mine[0] - mine[1]).max()))
    assert np.array_equal(theirs[0], theirs[1])
    assert np.array_equal(mine[0], mine[1])
