import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet.core.sampling import Sampler, SamplingParams, apply_penalties, top_ids, truncate


def test_greedy_takes_the_argmax_and_the_lower_id_on_ties() -> None:
    s = Sampler(SamplingParams(temperature=0))
    assert s.sample(np.array([0.0, 3.0, 1.0, 3.0], np.float32), []) == 1


def test_same_seed_same_tokens_other_seed_differs() -> None:
    logits = np.random.default_rng(1).normal(size=500).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    a = [Sampler(params).sample(logits, []) for _ in range(1)]
    s1, s2 = Sampler(params), Sampler(params)
    run1 = [s1.sample(logits, []) for _ in range(50)]
    run2 = [s2.sample(logits, []) for _ in range(50)]
    assert run1 == run2 and a[0] == run1[0]
    s3 = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=8))
    assert [s3.sample(logits, []) for _ in range(50)] != run1


def test_top_k_keeps_the_k_best() -> None:
    z = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    ids, _ = truncate(z, SamplingParams(top_k=2, top_p=1.0, min_p=0.0))
    assert list(ids) == [1, 3]


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    z = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, _ = truncate(z, SamplingParams(top_k=0, top_p=0.75, min_p=0.0))
    assert list(ids) == [0, 1]
    ids, _ = truncate(z, SamplingParams(top_k=0, top_p=0.85, min_p=0.0))
    assert list(ids) == [0, 1, 2]


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    z = np.log(np.array([0.6, 0.3, 0.06, 0.04]))
    ids, _ = truncate(z, SamplingParams(top_k=0, top_p=1.0, min_p=0.1))
    assert list(ids) == [0, 1]


def test_repeat_penalty_follows_llama_cpp() -> None:
    z = np.array([2.0, -2.0, 1.0])
    out = apply_penalties(z, [0, 1], SamplingParams(repeat_penalty=2.0))
    assert list(out) == [1.0, -4.0, 1.0]


def test_presence_and_frequency_penalties() -> None:
    z = np.zeros(3)
    out = apply_penalties(z, [2, 2, 0], SamplingParams(presence_penalty=0.5,
                                                       frequency_penalty=0.25))
    assert list(out) == [-0.75, 0.0, -1.0]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5),
                                 dict(min_p=2), dict(top_k=-1), dict(repeat_penalty=0)])
def test_bad_parameters_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**bad)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=64), st.integers(0, 10),
       st.floats(0.05, 1.0), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_sampled_token_is_always_a_kept_candidate(z, k, top_p, min_p, seed) -> None:
    logits = np.array(z, np.float32)
    params = SamplingParams(temperature=0.7, top_k=k, top_p=top_p, min_p=min_p, seed=seed)
    ids, _ = truncate(logits.astype(np.float64), params)
    assert Sampler(params).sample(logits, []) in set(ids.tolist())


def test_negative_seeds_are_accepted_and_deterministic() -> None:
    logits = np.random.default_rng(2).normal(size=100).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=-5)
    assert Sampler(params).sample(logits, []) == Sampler(params).sample(logits, [])


def test_an_overflowing_penalty_still_samples_a_real_token() -> None:
    logits = np.array([3.0, -2.0, 1.0, 0.5], np.float32)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                            repeat_penalty=5e-324, seed=1)
    assert 0 <= Sampler(params).sample(logits, [0, 1, 2, 3]) < 4


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=300), st.integers(0, 310),
       st.booleans())
def test_top_ids_is_the_prefix_of_a_stable_descending_sort(values, k, spread):
    # small integer logits make many ties: the ids kept at the cut must be the lowest ones
    z = np.asarray(values, dtype=np.float64) * (1.7 if spread else 1.0)
    full = np.argsort(-z, kind="stable")
    expected = full[:k] if 0 < k < len(z) else full
    assert top_ids(z, k).tolist() == expected.tolist()


def _truncate_by_full_sort(z, p):
    """The definition: sort everything, then top-k, top-p, min-p."""
    order = np.argsort(-z, kind="stable")
    if p.top_k:
        order = order[: p.top_k]
    kept = z[order]
    probs = np.exp(kept - kept.max())
    probs /= probs.sum()
    if p.top_p < 1.0:
        cut = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
        order, kept, probs = order[:cut], kept[:cut], probs[:cut]
    if p.min_p > 0.0:
        order = order[probs >= p.min_p * probs[0]]
    return order


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5000), st.integers(0, 100),
       st.sampled_from([1.0, 0.999, 0.95, 0.5, 0.05]), st.sampled_from([0.0, 0.01, 0.05, 0.5]),
       st.floats(0.1, 20.0))
def test_truncate_keeps_what_a_full_sort_keeps(seed, vocab, top_k, top_p, min_p, scale):
    z = np.random.default_rng(seed).standard_normal(vocab) * scale
    p = SamplingParams(top_k=top_k, top_p=top_p, min_p=min_p)
    ids, kept = truncate(z, p)
    expected = _truncate_by_full_sort(z, p)
    if (top_k == 0 or top_k >= vocab) and top_p == 1.0 and min_p == 0.0:
        assert sorted(ids.tolist()) == list(range(vocab))  # nothing cut: id order
    else:
        assert ids.tolist() == expected.tolist()
    assert kept.tolist() == z[ids].tolist()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3000), st.floats(0.05, 10.0))
def test_draw_is_numpys_choice(seed, vocab, scale):
    """Sampler.draw is rng.choice(p=...) without the validation: the same index, same stream."""
    probs = np.random.default_rng(seed ^ 1).standard_normal(vocab) * scale
    probs = np.exp(probs - probs.max())
    probs /= probs.sum()
    numpy_rng = np.random.default_rng(seed)
    sampler = Sampler(SamplingParams(seed=seed))
    assert [sampler.draw(probs) for _ in range(4)] == \
        [int(numpy_rng.choice(vocab, p=probs)) for _ in range(4)]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(4, 3000))
def test_sample_rows_gives_each_rows_own_tokens(seed, batch, vocab):
    """The server samples a decode step's rows together; every row must get exactly the token
    (and leave its generator exactly where) sampling it alone would, whatever its neighbours."""
    from bitnet.core.sampling import sample_rows

    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((batch, vocab)) * rng.uniform(0.1, 8)).astype(np.float32)
    kinds = [SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0, seed=1),
             SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0),
             SamplingParams(seed=2),  # llama.cpp's chain: top-k, top-p, min-p
             SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.3,
                            seed=3)]
    params = [kinds[int(k)] for k in rng.integers(0, len(kinds), batch)]
    together = [Sampler(p) for p in params]
    alone = [Sampler(p) for p in params]
    history = [[1, 2, 3]] * batch
    for _ in range(3):
        assert sample_rows(together, logits, history) == \
            [s.sample(logits[r], history[r]) for r, s in enumerate(alone)]
