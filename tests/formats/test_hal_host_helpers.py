"""bitnet.hal.rope_tables and bitnet.hal.arg_checks: the host-side helpers GPU backends share.

(They live in bitnet.hal; their tests sit here until a tests/hal folder exists.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bitnet.backends.reference.descriptor import descriptor as reference
from bitnet.hal import KV_BLOCK, CreateOptions, arg_checks
from bitnet.hal.kv_blocks import cache_rows, check_rows
from bitnet.hal.rope_tables import MIN_POSITIONS, RopeTables, rope_angles


@dataclass
class _Buf:
    shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.float32)


@dataclass
class _Cache:
    width: int
    n_ctx: int
    n_layers: int


def test_rope_angles_follow_the_contract():
    angles = rope_angles(10000.0, 8, 5)
    assert angles.dtype == np.float64 and angles.shape == (5, 4)
    want = np.array([[p * 10000.0 ** (-2 * i / 8) for i in range(4)] for p in range(5)])
    np.testing.assert_allclose(angles, want, rtol=1e-15)


def test_rope_tables_rotate_like_the_reference():
    """cos/sin from the tables applied NEOX-style give the reference backend's rope bits."""
    tables = RopeTables(lambda a: a, np.float64)
    heads, dim, pos, n = 2, 8, 3, 4
    x = np.random.default_rng(0).standard_normal((n, heads * dim)).astype(np.float32)
    cos_t, sin_t = tables.get(1e4, dim, pos + n)
    c = cos_t[pos : pos + n][:, None, :]
    s = sin_t[pos : pos + n][:, None, :]
    xh = x.reshape(n, heads, dim).astype(np.float64)
    a, b = xh[..., : dim // 2], xh[..., dim // 2 :]
    got = np.concatenate([a * c - b * s, a * s + b * c], axis=-1).astype(np.float32)
    ref = reference.create(reference.probe()[0], CreateOptions())
    want = ref.download(ref.rope(ref.upload(x), pos, heads, dim, 1e4))
    np.testing.assert_array_equal(got.reshape(n, heads * dim), want)


def test_rope_tables_upload_once_and_grow_by_doubling():
    uploads: list[np.ndarray] = []

    def upload(array: np.ndarray) -> np.ndarray:
        uploads.append(array)
        return array

    tables = RopeTables(upload, np.float32)
    cos_t, sin_t = tables.get(5e5, 64, 10)
    assert cos_t.shape == (MIN_POSITIONS, 32) and cos_t.dtype == np.float32
    assert tables.get(5e5, 64, MIN_POSITIONS)[0] is cos_t and len(uploads) == 2
    grown = tables.get(5e5, 64, MIN_POSITIONS + 1)[0]
    assert grown.shape == (2 * MIN_POSITIONS, 32) and len(uploads) == 4
    np.testing.assert_array_equal(grown[:MIN_POSITIONS], cos_t)
    tables.get(1e4, 64, 1)  # another theta: its own tables
    assert len(uploads) == 6
    tables.clear()
    tables.get(5e5, 64, 1)
    assert len(uploads) == 8


def test_op_checks_name_backend_op_and_cause():
    with pytest.raises(ValueError, match=r"gpu rope: expected a float32 \[n, K\] buffer"):
        arg_checks.activations_2d("gpu", "rope", _Buf((2, 3), np.dtype(np.float64)))
    assert arg_checks.activations_2d("gpu", "rope", _Buf((2, 3))) == (2, 3)
    with pytest.raises(ValueError, match="gpu add: shapes"):
        arg_checks.same_shapes("gpu", "add", _Buf((2, 3)), _Buf((3, 2)))
    with pytest.raises(ValueError, match="gpu slice_rows: rows 2..2 of 4"):
        arg_checks.row_slice("gpu", _Buf((4, 8)), 2, 2)
    assert arg_checks.row_slice("gpu", _Buf((4, 8)), 1, 4) == (4, 8)
    with pytest.raises(ValueError, match="nothing to concatenate"):
        arg_checks.concat_width("gpu", [])
    with pytest.raises(ValueError, match="widths"):
        arg_checks.concat_width("gpu", [_Buf((1, 8)), _Buf((1, 4))])
    assert arg_checks.concat_width("gpu", [_Buf((1, 8)), _Buf((3, 8))]) == 8


def test_attention_fits_checks_heads_and_cache():
    q, kv = _Buf((2, 32)), _Buf((2, 16))
    cache = _Cache(width=16, n_ctx=8, n_layers=2)
    assert arg_checks.attention_fits("gpu", q, kv, kv, cache, 1, 6, 4, 2, 8) == 2
    with pytest.raises(ValueError, match="do not fit"):
        arg_checks.attention_fits("gpu", q, kv, kv, cache, 0, 0, 4, 1, 8)
    with pytest.raises(ValueError, match="allocated for other head sizes"):
        arg_checks.attention_fits("gpu", _Buf((2, 24)), kv, kv, cache, 0, 0, 3, 2, 8)
    with pytest.raises(ValueError, match=r"positions 7..8 exceed the cache \(8 positions"):
        arg_checks.attention_fits("gpu", q, kv, kv, cache, 0, 7, 4, 2, 8)
    with pytest.raises(ValueError, match="layer 2 / position 0 outside the cache"):
        arg_checks.attention_fits("gpu", q, kv, kv, cache, 2, 0, 4, 2, 8)


def test_attention_fits_checks_the_block_table():
    q, kv = _Buf((2, 32)), _Buf((2, 16))
    pool = _Cache(width=16, n_ctx=4 * KV_BLOCK, n_layers=1)  # 4 blocks
    table = np.array([3, 0], np.int32)
    # a table lets positions run past the rows of a contiguous cache of that size...
    assert arg_checks.attention_fits("gpu", q, kv, kv, pool, 0, KV_BLOCK + 3, 4, 2, 8,
                                     table) == 2
    with pytest.raises(ValueError, match="need 3 blocks of 16; the table has 2"):
        arg_checks.attention_fits("gpu", q, kv, kv, pool, 0, 2 * KV_BLOCK - 1, 4, 2, 8, table)
    with pytest.raises(ValueError, match=r"entries must be in \[0, 4\)"):
        arg_checks.attention_fits("gpu", q, kv, kv, pool, 0, 0, 4, 2, 8,
                                  np.array([4], np.int32))
    with pytest.raises(ValueError, match="int32 1-D"):
        arg_checks.attention_fits("gpu", q, kv, kv, pool, 0, 0, 4, 2, 8, np.array([0]))


def test_cache_rows_maps_positions_through_blocks():
    table = np.array([2, 0, 5], np.int32)
    rows = cache_rows(table, np.array([0, 15, 16, 33]))
    assert rows.tolist() == [32, 47, 0, 81]
    assert cache_rows(None, np.array([3, 4])).tolist() == [3, 4]


def test_check_rows_checks_each_row_and_names_the_first_bad_one():
    pool = 4 * KV_BLOCK  # blocks 0..3
    # row 1 reads one block; its second entry (unused padding) may be anything
    tables = np.array([[3, 0], [1, 99]], np.int32)
    positions = np.array([KV_BLOCK + 2, 5], np.int32)
    got_tables, got_positions = check_rows("gpu", tables, positions, pool)
    assert got_tables is tables and got_positions is positions
    with pytest.raises(ValueError, match=r"gpu row 1: block table entries must be in \[0, 4\)"):
        check_rows("gpu", np.array([[3, 0], [1, 99]], np.int32),
                   np.array([5, KV_BLOCK], np.int32), pool)
    with pytest.raises(ValueError, match="gpu row 0: positions up to 33 need 3 blocks"):
        check_rows("gpu", tables, np.array([2 * KV_BLOCK, 0], np.int32), pool)
    with pytest.raises(ValueError, match="gpu row 1: .* entries must be in"):
        check_rows("gpu", np.array([[0, 1], [-1, 2]], np.int32), np.array([0, 0], np.int32),
                   pool)
    with pytest.raises(ValueError, match="same cache row"):  # a shared block, same offset
        check_rows("gpu", np.array([[2], [2]], np.int32), np.array([4, 4], np.int32), pool)
    # a shared prefix block is fine where the rows write elsewhere
    check_rows("gpu", np.array([[2, 0], [2, 1]], np.int32),
               np.array([KV_BLOCK, KV_BLOCK + 3], np.int32), pool)
    with pytest.raises(ValueError, match="negative position"):
        check_rows("gpu", tables, np.array([0, -1], np.int32), pool)
    with pytest.raises(ValueError, match=r"int32 \[B\]"):
        check_rows("gpu", tables, np.array([0, 1]), pool)
    empty = check_rows("gpu", np.zeros((0, 2), np.int32), np.zeros(0, np.int32), pool)
    assert empty[0].shape == (0, 2)


def test_cache_reach_checks_one_position_of_a_layer():
    cache = _Cache(width=16, n_ctx=2 * KV_BLOCK, n_layers=2)
    arg_checks.cache_reach("cpu", "decode_layer", cache, 1, 2 * KV_BLOCK - 1, 1)
    with pytest.raises(ValueError, match=r"cpu decode_layer: positions 32..32 exceed the cache"):
        arg_checks.cache_reach("cpu", "decode_layer", cache, 1, 2 * KV_BLOCK, 1)
    with pytest.raises(ValueError, match="cpu decode_layer: layer 2 / position 0 outside"):
        arg_checks.cache_reach("cpu", "decode_layer", cache, 2, 0, 1)
    arg_checks.cache_reach("cpu", "decode_layer", cache, 0, KV_BLOCK, 1,
                           np.array([1, 0], np.int32))
    with pytest.raises(ValueError, match="cpu decode_layer: positions up to 17 need 2 blocks"):
        arg_checks.cache_reach("cpu", "decode_layer", cache, 0, KV_BLOCK, 1,
                               np.array([1], np.int32))


def test_files_digest_hashes_names_and_bytes_in_name_order(tmp_path):
    import hashlib

    from bitnet.hal.fingerprint import files_digest, kernel_files

    (tmp_path / "b.cl").write_bytes(b"kernel b")
    (tmp_path / "a.cl").write_bytes(b"kernel a")
    (tmp_path / "notes.txt").write_bytes(b"not a kernel")
    files = kernel_files(tmp_path, (".cl",))
    assert [f.name for f in files] == ["a.cl", "b.cl"]
    want = hashlib.sha256(b"v1" + b"a.cl" + b"kernel a" + b"b.cl" + b"kernel b").hexdigest()
    assert files_digest(files, salt=b"v1") == want
    sep = hashlib.sha256(b"a.cl\0kernel a\0b.cl\0kernel b\0").hexdigest()
    assert files_digest(files, separator=b"\0") == sep
    (tmp_path / "b.cl").write_bytes(b"kernel b changed")
    assert files_digest(kernel_files(tmp_path, (".cl",)), salt=b"v1") != want


def test_op_input_checks():
    x = _Buf((3, 16))
    assert arg_checks.matmul_input("gpu", "linear_float", x, 16) == (3, 16)
    with pytest.raises(ValueError, match="gpu linear_float: x has 16 columns, weight has 32"):
        arg_checks.matmul_input("gpu", "linear_float", x, 32)
    assert arg_checks.norm_input("gpu", x, _Buf((1, 16))) == (3, 16)
    with pytest.raises(ValueError, match=r"gpu rmsnorm: weight shape \(16,\) != \(1, 16\)"):
        arg_checks.norm_input("gpu", x, _Buf((16,)))
    assert arg_checks.rope_input("gpu", x, 2, 8) == (3, 16)
    with pytest.raises(ValueError, match="gpu rope: width 16 != 4 heads x 3"):
        arg_checks.rope_input("gpu", _Buf((3, 16)), 4, 3)
