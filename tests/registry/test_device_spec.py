"""bitnet.hal.device_spec: the --device / device= / BITNET_DEVICE syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitnet.hal.device_spec import DeviceRequest, parse_device_spec


@pytest.mark.parametrize("text,expected", [
    ("auto", [("auto", None)]),
    ("cpu", [("cpu", None)]),
    ("reference", [("reference", None)]),
    ("cuda", [("cuda", None)]),
    ("cuda:1", [("cuda", 1)]),
    ("opencl:0", [("opencl", 0)]),
    ("vulkan", [("vulkan", None)]),
    ("cuda,cpu", [("cuda", None), ("cpu", None)]),
    (" CUDA:0 , cpu ", [("cuda", 0), ("cpu", None)]),
    ("cuda,auto", [("cuda", None), ("auto", None)]),
    ("my-backend_2:3", [("my-backend_2", 3)]),
])
def test_accepted(text, expected):
    spec = parse_device_spec(text)
    assert [(r.backend, r.index) for r in spec.requests] == expected


@pytest.mark.parametrize("text", ["", " ", "cuda:", ":1", "cuda:-1", "cuda:x", "cuda,,cpu",
                                  "auto:0", "1cuda", "cuda cpu", "cuda:1:2", "gpu!"])
def test_rejected_with_the_syntax(text):
    with pytest.raises(ValueError, match="accepted: auto"):
        parse_device_spec(text)


def test_duplicates_rejected():
    with pytest.raises(ValueError, match="appears twice"):
        parse_device_spec("cuda,cpu,cuda")


def test_not_a_string():
    with pytest.raises(ValueError, match="must be a string"):
        parse_device_spec(3)  # type: ignore[arg-type]


def test_plain_auto_and_str_round_trip():
    assert parse_device_spec("auto").is_auto
    assert not parse_device_spec("cuda,auto").is_auto
    assert str(parse_device_spec("cuda:1, cpu")) == "cuda:1,cpu"
    assert str(DeviceRequest("cuda")) == "cuda"


names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True).filter(lambda n: n != "auto")


@given(st.lists(st.tuples(names, st.none() | st.integers(0, 99)), min_size=1, max_size=4,
                unique_by=lambda t: t))
def test_any_valid_list_round_trips(entries):
    text = ",".join(n if i is None else f"{n}:{i}" for n, i in entries)
    spec = parse_device_spec(text)
    assert [(r.backend, r.index) for r in spec.requests] == entries
    assert parse_device_spec(str(spec)) == spec
