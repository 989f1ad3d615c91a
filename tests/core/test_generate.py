import pytest

from bitnet.core.generate import ContextLengthError, StopStrings, check_fits


def feed(stops, pieces):
    s = StopStrings(stops)
    out = "".join(s.push(p) for p in pieces)
    return out + s.flush(), s.stopped


def test_stop_string_inside_one_piece() -> None:
    assert feed(["END"], ["abc END def"]) == ("abc ", True)


def test_stop_string_split_across_pieces_never_leaks() -> None:
    s = StopStrings(["\n\nUser:"])
    seen = [s.push(p) for p in ["Hi", "\n", "\nUs", "er:", " more"]]
    assert "".join(seen) == "Hi" and s.stopped


def test_a_held_back_prefix_is_released_when_it_does_not_complete() -> None:
    assert feed(["STOP"], ["ab ST", "ART"]) == ("ab START", False)


def test_no_stops_passes_everything() -> None:
    assert feed([], ["a", "b"]) == ("ab", False)


def test_earliest_stop_wins() -> None:
    assert feed(["b", "a"], ["xxab"]) == ("xx", True)


def test_context_overflow_is_a_clear_error() -> None:
    check_fits(8, 8)
    with pytest.raises(ContextLengthError, match="9 tokens do not fit the context of 8"):
        check_fits(9, 8)


def test_a_prompt_filled_in_pieces_through_a_block_table_gives_the_contiguous_logits() -> None:
    """What the server does: fill() a prompt chunk by chunk from start positions into shuffled
    blocks of a pool, then run the last token; the same logits as one contiguous prefill (and
    fill() runs no head)."""
    import numpy as np

    import bitnet
    from bitnet.core.generate import fill, prefill
    from bitnet.hal import KV_BLOCK
    from tests.core.fixtures import model_path

    model = bitnet.load(model_path("tiny-b158-i2_s"), device="reference", progress=False)
    t = model.transformer
    ids = [1] + [(5 * j) % 400 + 7 for j in range(56)]
    whole = prefill(t, ids, last_only=True)
    pool = t.new_cache(8 * KV_BLOCK)
    table = np.asarray([6, 2, 7, 0], np.int32)

    def heads() -> int:
        return sum(n for op, n in t.ops.counts.items() if op.startswith("linear_float"))

    before = heads()
    for start, stop in ((0, 20), (20, 37), (37, len(ids) - 1)):
        fill(t, ids[start:stop], pool, table, start=start)
    assert heads() == before  # no head: the logits were never needed
    assert t.ops.counts["attention"] > 0
    last = prefill(t, ids[-1:], True, pool, table, start=len(ids) - 1)
    np.testing.assert_array_equal(last, whole)
