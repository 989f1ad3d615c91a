"""The KV block pool's bookkeeping and the sizing of --kv-memory (no model, no server)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bitnet.hal import KV_BLOCK, DeviceKind
from bitnet.server.kv_memory import (KvMemory, block_bytes, free_memory, kv_budget,
                                     parse_kv_memory)
from bitnet.server.kv_pool import BlockPool, PoolExhausted, block_hash, chain_hashes


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def test_allocation_release_and_the_free_list() -> None:
    pool = BlockPool(4)
    a = [pool.allocate() for _ in range(4)]
    assert sorted(a) == [0, 1, 2, 3] and pool.used == 4 and pool.available == 0
    with pytest.raises(PoolExhausted):
        pool.allocate()
    pool.release([a[2]])
    assert pool.free == 1 and pool.allocate() == a[2]  # the block just freed comes back first
    pool.check([a])
    with pytest.raises(RuntimeError, match="released more often"):
        pool.release([a[0], a[0]])


def test_named_blocks_stay_cached_and_are_evicted_oldest_first() -> None:
    pool = BlockPool(3)
    hashes = chain_hashes(tokens(3 * KV_BLOCK), [])
    blocks = [pool.allocate() for _ in range(3)]
    for b, h in zip(blocks, hashes):
        pool.name(b, h)
    pool.release([blocks[1]])
    pool.release([blocks[2], blocks[0]])  # a table is released from its end
    assert pool.cached == 3 and pool.free == 0 and pool.used == 0
    assert pool.cached_prefix(hashes) == blocks
    pool.check([])
    # the pool needs a block: the least recently released cached one goes (blocks[1]), and the
    # chain of names is then found only up to it
    assert pool.allocate() == blocks[1]
    assert pool.counters.evicted == 1
    assert pool.cached_prefix(hashes) == blocks[:1]
    pool.check([[blocks[1]]])


def test_sharing_counts_references_and_takes_blocks_out_of_the_cache() -> None:
    pool = BlockPool(4)
    h = chain_hashes(tokens(KV_BLOCK), [])
    b = pool.allocate()
    pool.name(b, h[0])
    hit = pool.cached_prefix(h)
    assert hit == [b] and pool.idle_among(hit) == 0  # still held by its writer
    pool.share(hit)
    assert pool.refs[b] == 2
    pool.release([b])
    pool.release([b])
    assert pool.cached == 1
    pool.share(pool.cached_prefix(h))
    assert pool.cached == 0 and pool.used == 1 and pool.counters.hit_blocks == 2
    pool.check([[b]])


def test_a_second_block_with_the_same_prefix_stays_private() -> None:
    pool = BlockPool(2)
    h = chain_hashes(tokens(KV_BLOCK), [])[0]
    a, b = pool.allocate(), pool.allocate()
    pool.name(a, h)
    pool.name(b, h)  # computed side by side by two requests with the same prompt
    pool.release([a, b])
    assert pool.cached == 1 and pool.free == 1
    assert pool.cached_prefix([h]) == [a]


def test_block_names_chain_over_the_whole_prefix() -> None:
    x = tokens(2 * KV_BLOCK)
    y = tokens(KV_BLOCK, 1000) + x[KV_BLOCK:]  # same second block, other first block
    hx, hy = chain_hashes(x, []), chain_hashes(y, [])
    assert hx[1] != hy[1] and hx[0] != hy[0]
    assert chain_hashes(x + [5], hx[:1]) == hx  # only full blocks get a name
    with pytest.raises(ValueError):
        block_hash(b"", tokens(KV_BLOCK - 1))


def test_check_names_what_is_wrong() -> None:
    pool = BlockPool(2)
    a = pool.allocate()
    with pytest.raises(AssertionError, match="reference counts"):
        pool.check([])
    with pytest.raises(AssertionError, match="twice"):
        pool.check([[a, a]])


@pytest.mark.parametrize("text, expected", [
    ("2MB", KvMemory(bytes=2 << 20)), ("512MB", KvMemory(bytes=512 << 20)),
    ("4GB", KvMemory(bytes=4 << 30)), ("1.5GiB", KvMemory(bytes=3 << 29)),
    ("64k", KvMemory(bytes=64 << 10)), ("0.5", KvMemory(fraction=0.5)),
    ("1", KvMemory(fraction=1.0)),
])
def test_kv_memory_sizes_and_fractions(text: str, expected: KvMemory) -> None:
    assert parse_kv_memory(text) == expected


@pytest.mark.parametrize("text, says", [("5", "fraction"), ("0", "fraction"), ("4XB", "size"),
                                        ("lots", "size"), ("0MB", "positive")])
def test_bad_kv_memory_is_explained(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_kv_memory(text)


def device(kind: DeviceKind, free: int | None, total: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, memory_free=free, memory_total=total, name="test device")


def test_the_budget_says_where_its_size_came_from() -> None:
    per = block_bytes(2, 128)
    assert per == 2 * 2 * KV_BLOCK * 128 * 2
    gpu = device(DeviceKind.DGPU, 100 * per)
    b = kv_budget(KvMemory(fraction=0.5), gpu, 2, 128, n_ctx=256, max_batch=4)
    assert b.blocks == 50 and "test device" in b.source
    b = kv_budget(KvMemory(bytes=20 * per), gpu, 2, 128, n_ctx=256, max_batch=4)
    assert b.blocks == 20 and b.positions == 20 * KV_BLOCK
    # the default: max_batch whole contexts, unless that is over half the free memory
    assert kv_budget(None, gpu, 2, 128, n_ctx=256, max_batch=2).blocks == 32
    capped = kv_budget(None, gpu, 2, 128, n_ctx=256, max_batch=8)
    assert capped.blocks == 50 and "0.5 of" in capped.source
    assert "host available" in free_memory(device(DeviceKind.CPU, None))[1]
    assert free_memory(device(DeviceKind.DGPU, None, 8 << 30)) == (
        8 << 30, "total memory of test device (its free memory is not reported)")
    assert "reports no memory figures" in free_memory(device(DeviceKind.DGPU, None))[1]


def test_a_pool_smaller_than_one_context_is_refused() -> None:
    per = block_bytes(2, 128)
    with pytest.raises(ValueError, match="one whole context of 256 needs 16"):
        kv_budget(KvMemory(bytes=15 * per), device(DeviceKind.CPU, None), 2, 128, 256, 4)
