"""How many KV blocks the server's pool gets: ``--kv-memory`` parsed and resolved.

``--kv-memory`` is a size (``2MB``, ``512MB``, ``4GB``: binary units, 1 MB = 2**20 bytes, as
Docker and most memory flags read them) or a fraction of free memory (``0.5``). The free memory
is the device's own where its backend reports it (a GPU's free memory, as probed when the
backend was chosen; a GPU that reports only its size: its total memory), else the host's
available memory now (``MemAvailable``): what a CPU backend's cache lives in.
``KvBudget.source`` says which was used.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from bitnet.hal import KV_BLOCK, DeviceKind
from bitnet.hal.kv_blocks import blocks_for

log = logging.getLogger("bitnet.server")

_UNITS = {"": None, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}
DEFAULT_FRACTION = 0.5  # without --kv-memory: at most this share of free memory


@dataclass(frozen=True)
class KvMemory:
    """A parsed ``--kv-memory``: exactly one of ``bytes`` and ``fraction`` is set."""

    bytes: int | None = None
    fraction: float | None = None


def parse_kv_memory(text: str) -> KvMemory:
    """``"512MB"`` -> 512 MiB; ``"0.5"`` -> half of free memory. Raises ValueError naming the
    accepted forms."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"--kv-memory {text!r}: give a size such as 512MB or 4GB (units B, KB, "
                         f"MB, GB, TB: powers of 1024) or a fraction of free memory in (0, 1] "
                         f"such as 0.5")
    value = float(m.group(1))
    if unit == "":
        if not 0 < value <= 1:
            raise ValueError(f"--kv-memory {text!r}: a number without a unit is a fraction of "
                             f"free memory and must be in (0, 1]; for a size add a unit "
                             f"(e.g. {text}MB)")
        return KvMemory(fraction=value)
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"--kv-memory {text!r}: the size must be positive")
    return KvMemory(bytes=size)


def block_bytes(n_layers: int, width: int) -> int:
    """Bytes of one KV block: K and V, f16, ``KV_BLOCK`` rows of ``width`` per layer."""
    return n_layers * 2 * KV_BLOCK * width * 2


def host_available() -> int | None:
    """The host's available memory in bytes (Linux MemAvailable; else free pages), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_memory(device: Any) -> tuple[int, str]:
    """The memory a fraction of ``--kv-memory`` is taken of, and where the figure came from:
    a device's own free memory where its backend reports it, else (a GPU reporting only its
    size) its total memory, else the host's available memory."""
    if device.kind != DeviceKind.CPU:
        if device.memory_free is not None:
            return device.memory_free, f"free memory of {device.name} as probed at start"
        if device.memory_total is not None:
            log.warning("%s does not report its free memory: --kv-memory's fraction is of its "
                        "total memory (the weights take part of it)", device.name)
            return device.memory_total, (f"total memory of {device.name} (its free memory is "
                                         f"not reported)")
    host = host_available()
    if host is None:
        raise ValueError("--kv-memory as a fraction needs the free memory, and neither the "
                         "device nor the host reports it: give a size such as 4GB")
    if device.kind == DeviceKind.CPU:
        return host, "host available memory"
    log.warning("%s reports no memory figures: --kv-memory's fraction is of the host's "
                "available memory; give a size to bound the device's share", device.name)
    return host, f"host available memory ({device.name} reports no memory figures)"


@dataclass(frozen=True)
class KvBudget:
    """The pool the server makes: ``blocks`` blocks of ``block_bytes`` bytes, and why."""

    blocks: int
    block_bytes: int
    source: str  # how the size was reached, for the log and /health

    @property
    def bytes(self) -> int:
        return self.blocks * self.block_bytes

    @property
    def positions(self) -> int:
        return self.blocks * KV_BLOCK


def kv_budget(spec: KvMemory | None, device: Any, n_layers: int, width: int, n_ctx: int,
              max_batch: int) -> KvBudget:
    """The pool for ``spec`` (None: room for ``max_batch`` whole contexts, but at most
    DEFAULT_FRACTION of free memory and at least one context). A pool must hold one whole
    context, so that any single request can run alone; a smaller ``spec`` is an error."""
    per_block = block_bytes(n_layers, width)
    one_context = blocks_for(n_ctx)
    if spec is None:
        want = max_batch * one_context
        try:
            free, where = free_memory(device)
        except ValueError:
            return KvBudget(want, per_block, f"{max_batch} contexts of {n_ctx} (--max-batch; "
                                             f"free memory unknown)")
        cap = int(free * DEFAULT_FRACTION) // per_block
        if cap >= want:
            return KvBudget(want, per_block, f"{max_batch} contexts of {n_ctx} (--max-batch)")
        return KvBudget(max(cap, one_context), per_block,
                        f"{DEFAULT_FRACTION} of {where} ({free / 2**30:.1f} GiB)")
    if spec.bytes is not None:
        blocks, why = spec.bytes // per_block, f"--kv-memory {_size(spec.bytes)}"
    else:
        free, where = free_memory(device)
        blocks = int(free * spec.fraction) // per_block
        why = f"--kv-memory {spec.fraction} of {where} ({free / 2**30:.1f} GiB)"
    if blocks < one_context:
        raise ValueError(f"{why} holds {blocks} KV blocks of {KV_BLOCK} positions "
                         f"({_size(per_block)} each); one whole context of {n_ctx} needs "
                         f"{one_context} ({_size(one_context * per_block)}): give more memory "
                         f"or a smaller --ctx")
    return KvBudget(blocks, per_block, why)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
