"""Fuzz the GGUF reader and loader with mutations of the real fixture files.

Property: opening and loading any mutated file (config, tokenizer, weights) either succeeds or
raises GGUFError / ModelFormatError, never anything else (no IndexError, struct.error,
MemoryError, a tokenizer library's RuntimeError, hang).
Hypothesis runs derandomized (the same examples every run, as CI needs) with a bounded number
of examples: about 45 s in all on a loaded 2-core machine. A few hand-built hostile headers are
also opened in a subprocess under RLIMIT_AS = 2 GiB, proving no huge allocation happens.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitnet.core.config import ModelConfig
from bitnet.core.errors import GGUFError, ModelFormatError
from bitnet.core.gguf import open_gguf
from bitnet.core.loader import load_weights
from bitnet.core.tokenizer import Tokenizer
from bitnet.testing.fixtures import MODELS as FIXTURE_MODELS

MODELS = FIXTURE_MODELS
FIXTURES = [MODELS / n for n in ("tiny-b158-i2_s.gguf", "tiny-bitnet-tq2_0.gguf",
                                 "tiny-bitnet-tq1_0.gguf")]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not all(p.exists() for p in FIXTURES),
                                 reason="fixture models not present")]

# CI: the same examples every run. A longer random campaign:
#   BITNET_FUZZ_EXAMPLES=5000 BITNET_FUZZ_RANDOM=1 pytest tests/fuzz
FUZZ = settings(derandomize=os.environ.get("BITNET_FUZZ_RANDOM") != "1", deadline=None,
                database=None, max_examples=int(os.environ.get("BITNET_FUZZ_EXAMPLES", "400")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_WORK = Path(tempfile.mkdtemp(prefix="bitnet-gguf-fuzz-"))


def header_fields(raw: bytes) -> tuple[int, list[int], list[int]]:
    """Walk a valid GGUF header: (end of the tensor-info section, offsets of every u64 count
    or length field, offsets of every u32 type field)."""
    lengths = [8, 16]  # tensor count, metadata count
    types: list[int] = []
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", raw, 8)

    def string(p: int) -> int:
        lengths.append(p)
        return p + 8 + struct.unpack_from("<Q", raw, p)[0]

    def value(p: int, vtype: int) -> int:
        if vtype == 8:
            return string(p)
        if vtype == 9:
            types.append(p)
            item, count = struct.unpack_from("<IQ", raw, p)
            lengths.append(p + 4)
            p += 12
            for _ in range(count):
                p = value(p, item)
            return p
        return p + {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}[vtype]

    for _ in range(n_kv):
        pos = string(pos)
        types.append(pos)
        pos = value(pos + 4, struct.unpack_from("<I", raw, pos)[0])
    for _ in range(n_tensors):
        pos = string(pos)
        n_dims = struct.unpack_from("<I", raw, pos)[0]
        lengths.extend(pos + 4 + 8 * j for j in range(n_dims))
        pos += 4 + 8 * n_dims
        types.append(pos)
        lengths.append(pos + 4)  # the data offset
        pos += 12
    return pos, lengths, types


RAW = [p.read_bytes() for p in FIXTURES]
FIELDS = [header_fields(r) for r in RAW]


def open_and_load(raw: bytes) -> None:
    path = _WORK / "fuzz.gguf"
    path.write_bytes(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not ternary" warnings are fine here
            with open_gguf(path) as f:
                config = ModelConfig.from_metadata(f.metadata)
                tokenizer = Tokenizer.from_metadata(f.metadata)
                tokenizer.decode(tokenizer.encode("Hello, world! 123 \U0001f642"))
                load_weights(f, config)
    except (GGUFError, ModelFormatError):
        pass


def test_walker_understands_the_fixtures() -> None:
    for raw, path, (end, lengths, types) in zip(RAW, FIXTURES, FIELDS):
        with open_gguf(path) as f:
            assert end <= f.data_offset < end + 32
            assert len(types) == len(f.metadata) + len(f.tensors) + sum(
                isinstance(v, list) for v in f.metadata.values())
        assert len(lengths) > 100


@FUZZ
@given(which=st.integers(0, len(RAW) - 1), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncation(which: int, cut: float) -> None:
    raw = RAW[which]
    end = FIELDS[which][0]
    # half the cuts inside the header, where parsing happens
    position = int(cut * (2 * end if cut < 0.5 else len(raw)))
    open_and_load(raw[:min(position, len(raw) - 1)])


@FUZZ
@given(which=st.integers(0, len(RAW) - 1),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8))
def test_byte_flips_in_the_header(which: int, flips: list[tuple[float, int]]) -> None:
    raw = bytearray(RAW[which])
    end = FIELDS[which][0]
    for where, value in flips:
        raw[int(where * end)] = value
    open_and_load(bytes(raw))


BIG = st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**56, 2**63 - 1, 2**63,
                       2**64 - 1])


@FUZZ
@given(which=st.integers(0, len(RAW) - 1), pick=st.floats(0.0, 1.0, exclude_max=True),
       value=BIG, delta=st.integers(-3, 1000))
def test_inflated_counts_and_lengths(which: int, pick: float, value: int, delta: int) -> None:
    raw = bytearray(RAW[which])
    lengths = FIELDS[which][1]
    at = lengths[int(pick * len(lengths))]
    old = struct.unpack_from("<Q", raw, at)[0]
    new = value if delta % 2 else (old + delta) % 2**64  # absurd values and near-misses
    struct.pack_into("<Q", raw, at, new)
    open_and_load(bytes(raw))


@FUZZ
@given(which=st.integers(0, len(RAW) - 1), pick=st.floats(0.0, 1.0, exclude_max=True),
       value=st.one_of(st.integers(0, 64), st.sampled_from([2**31, 2**32 - 1])))
def test_type_fields(which: int, pick: float, value: int) -> None:
    raw = bytearray(RAW[which])
    types = FIELDS[which][2]
    struct.pack_into("<I", raw, types[int(pick * len(types))], value)
    open_and_load(bytes(raw))


# -- no huge allocation, proven under an address-space limit ------------------------------------

_OPENER = """
import sys
from bitnet.core.errors import GGUFError
from bitnet.core.gguf import open_gguf
from bitnet.testing.fixtures import MODELS as FIXTURE_MODELS
for path in sys.argv[1:]:
    try:
        open_gguf(path)
    except GGUFError as e:
        print("GGUFError", e)
    else:
        print("OPENED", path)
"""


def _hostile_headers() -> dict[str, bytes]:
    def head(n_tensors: int, n_kv: int) -> bytes:
        return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)

    def key(name: bytes) -> bytes:
        return struct.pack("<Q", len(name)) + name

    return {
        "kv_count": head(0, 2**63),
        "tensor_count": head(2**40, 0),
        "u8_array": head(0, 1) + key(b"k") + struct.pack("<IIQ", 9, 0, 2**62) + b"\0" * 64,
        "str_array": head(0, 1) + key(b"k") + struct.pack("<IIQ", 9, 8, 2**34) + b"\0" * 64,
        "string": head(0, 1) + key(b"k") + struct.pack("<IQ", 8, 2**33) + b"x" * 64,
        "key_length": head(0, 1) + struct.pack("<Q", 2**60) + b"\0" * 64,
        "dims": head(1, 0) + key(b"t") + struct.pack("<I4QIQ", 4, *[2**15] * 4, 0, 0) + b"\0" * 64,
        "many_tiny_tensors": head(2**26, 0) + b"\0" * 4096,
    }


def _limit_address_space() -> None:
    limit = 2 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics are Linux's")
def test_hostile_headers_under_a_2_gib_address_space_limit(tmp_path: Path) -> None:
    paths = []
    for name, raw in _hostile_headers().items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(raw)
        paths.append(str(path))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _OPENER, *paths], capture_output=True,
                          check=False, text=True, timeout=120, env=env,
                          preexec_fn=_limit_address_space)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths), done.stdout + done.stderr[-2000:]
    assert all(line.startswith("GGUFError") for line in lines), done.stdout
