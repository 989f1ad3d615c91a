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
