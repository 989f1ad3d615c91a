"""The server's KV block pool: a free list, reference counts and a prefix cache of full blocks.

The pool is one paged KV cache (``bitnet.hal.kv_blocks``) of ``n_blocks`` blocks of
``KV_BLOCK`` positions. A sequence holds the blocks its tokens fill, each named once in its
block table; a block is in one of three states:

- used: held by one or more sequences (``refs > 0``);
- cached: held by no sequence but still holding the K/V of a known run of tokens: it stays in
  the prefix cache, in least-recently-released order, until the pool needs it back;
- free: holding nothing anyone can find.

A full block (all ``KV_BLOCK`` positions written) is known by the hash of its tokens and of the
block before it (``block_hash``), so a hash names the whole prefix up to the block's end: two
sequences whose first ``j`` blocks have the same tokens name the same ``j`` hashes, and the
second can read the first's K/V instead of computing it again. Only full blocks are shared,
and a sequence writes only into blocks it allocated itself (``bitnet.hal.kv_blocks``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from bitnet.hal import KV_BLOCK

ROOT_HASH = b""  # the parent of a sequence's first block


def block_hash(parent: bytes, tokens: list[int]) -> bytes:
    """The name of a full block: SHA-256 over the parent block's name and the block's token ids.
    A cryptographic hash, because a collision would hand one request another's K/V (a crafted
    prompt could read a stranger's cached prefix through it)."""
    if len(tokens) != KV_BLOCK:
        raise ValueError(f"a full block holds {KV_BLOCK} tokens, got {len(tokens)}")
    return hashlib.sha256(parent + np.asarray(tokens, dtype="<i8").tobytes()).digest()


def chain_hashes(tokens: list[int], known: list[bytes]) -> list[bytes]:
    """``known`` (the hashes of the first full blocks of ``tokens``) extended to every full
    block of ``tokens``; returns the same list, grown in place."""
    for j in range(len(known), len(tokens) // KV_BLOCK):
        parent = known[j - 1] if j else ROOT_HASH
        known.append(block_hash(parent, tokens[j * KV_BLOCK:(j + 1) * KV_BLOCK]))
    return known


class PoolExhausted(RuntimeError):
    """No free or cached block is left (the scheduler preempts a sequence before this)."""


@dataclass
class PoolCounters:
    """What the pool did since it was made (monotonic)."""

    allocated: int = 0  # blocks handed out fresh
    evicted: int = 0  # cached blocks taken back for new contents
    hit_blocks: int = 0  # blocks found in the prefix cache and shared


class BlockPool:
    """Allocation and prefix caching over block ids 0 .. n_blocks-1 (the K/V itself lives in the
    backend's cache; this class only does the bookkeeping). Not thread-safe: the scheduler's
    worker thread is its only user."""

    def __init__(self, n_blocks: int) -> None:
        if n_blocks < 1:
            raise ValueError(f"a KV pool needs at least one block, got {n_blocks}")
        self.n_blocks = n_blocks
        self.refs = np.zeros(n_blocks, np.int32)
        # a stack: the most recently freed block is reused first, so the rows written stay the
        # fewest the load needs (a CPU cache commits its pages only where rows are written)
        self._free = list(range(n_blocks - 1, -1, -1))
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached blocks, oldest release first
        self.counters = PoolCounters()

    # -- figures -------------------------------------------------------------------------------

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def cached(self) -> int:
        """Blocks no sequence holds that keep a prefix for later requests."""
        return len(self._lru)

    @property
    def used(self) -> int:
        return self.n_blocks - self.free - self.cached

    @property
    def available(self) -> int:
        """Blocks an allocation can take: free ones, then cached ones (evicted)."""
        return self.free + self.cached

    # -- allocation ----------------------------------------------------------------------------

    def allocate(self) -> int:
        """A block for one sequence to write (refs 1): a free one, else the least recently
        released cached block, whose prefix is forgotten."""
        if self._free:
            block = self._free.pop()
        elif self._lru:
            block, _ = self._lru.popitem(last=False)
            del self._by_hash[self._hash_of.pop(block)]
            self.counters.evicted += 1
        else:
            raise PoolExhausted(f"all {self.n_blocks} KV blocks are in use")
        self.refs[block] = 1
        self.counters.allocated += 1
        return block

    def release(self, blocks: list[int]) -> None:
        """A sequence lets go of ``blocks`` (its table, in order): a block no one holds any more
        stays in the prefix cache if it has a name, else it is free. The table is released
        from its end, so the cache gives up a prefix's last blocks before its first ones (a
        chain is only found from its start)."""
        for block in reversed(blocks):
            if self.refs[block] <= 0:
                raise RuntimeError(f"KV block {block} released more often than it was taken")
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if block in self._hash_of:
                    self._lru[block] = None
                else:
                    self._free.append(block)

    # -- the prefix cache ----------------------------------------------------------------------

    def cached_prefix(self, hashes: list[bytes]) -> list[int]:
        """The blocks holding the longest run of ``hashes`` (a sequence's full blocks, in
        order) that the pool knows; takes nothing."""
        out = []
        for h in hashes:
            block = self._by_hash.get(h)
            if block is None:
                break
            out.append(block)
        return out

    def idle_among(self, blocks: list[int]) -> int:
        """How many of ``blocks`` no sequence holds (sharing them takes them out of
        ``available``)."""
        return sum(1 for b in blocks if self.refs[b] == 0)

    def share(self, blocks: list[int]) -> None:
        """Take one more reference to each of ``blocks`` (from ``cached_prefix``)."""
        for block in blocks:
            if self.refs[block] == 0:
                del self._lru[block]
            self.refs[block] += 1
        self.counters.hit_blocks += len(blocks)

    def name(self, block: int, h: bytes) -> None:
        """Block ``block`` is full and holds the prefix named ``h``: later requests may share
        it. When another block already holds that prefix (two requests with the same prompt
        computed it side by side), this one stays private and is freed with its sequence."""
        if self.refs[block] <= 0:
            raise RuntimeError(f"KV block {block} is named but no sequence holds it")
        if h in self._by_hash or block in self._hash_of:
            return
        self._by_hash[h] = block
        self._hash_of[block] = h

    # -- checks --------------------------------------------------------------------------------

    def check(self, holders: list[list[int]]) -> None:
        """Assert the accounting, given every live sequence's blocks: each block is in exactly
        one state, and a block's reference count is the number of sequences that hold it.
        Raises AssertionError naming what is wrong (the tests and the soak call it)."""
        expected = np.zeros(self.n_blocks, np.int32)
        for blocks in holders:
            if len(set(blocks)) != len(blocks):
                raise AssertionError(f"a sequence names a block twice: {blocks}")
            np.add.at(expected, np.asarray(blocks, np.int64), 1)
        if not np.array_equal(expected, self.refs):
            bad = np.flatnonzero(expected != self.refs)[:5].tolist()
            raise AssertionError(f"reference counts differ from the holders at blocks {bad}")
        free, lru = set(self._free), set(self._lru)
        if len(free) != len(self._free) or free & lru:
            raise AssertionError("a block is on the free list twice or also cached")
        idle = set(np.flatnonzero(self.refs == 0).tolist())
        if idle != free | lru:
            raise AssertionError(f"{len(idle)} unheld blocks, but {len(free)} free and "
                                 f"{len(lru)} cached")
        if not lru <= set(self._hash_of) or len(self._by_hash) != len(self._hash_of):
            raise AssertionError("a cached block has no name, or the name maps disagree")
