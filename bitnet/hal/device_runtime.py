"""The device runtime: the few verbs a GPU API offers, on which ``GpuBackend`` is written once.

A GPU plugin is its devices, a ``DeviceRuntime`` over its API and its kernels. The runtime knows
nothing of models or weight formats; ``bitnet.hal.gpu_backend.GpuBackend`` knows nothing of the
API. Between them is the kernel table below: every kernel's name, its buffers in order, its
scalars in order and how its grid is counted. One argument order serves every API; a runtime
binds buffers and scalars its own way (OpenCL arguments, Vulkan bindings and push constants).

Grids are counted in one of three ways (``Grid``), which each runtime turns into its own
geometry:

- ``items``: (x, y) work items, one per element; the runtime picks the work-group size along x
  (kernels test ``x < count`` themselves);
- ``groups``: (x, y) work-groups of the runtime's reduction size (one group per row or block);
- ``matmul``: (row blocks, token tiles) of ``lanes x rows`` work-groups (the kernel's
  ``KernelSpec``): ``lanes`` invocations share an output row, ``rows`` rows share a group,
  ``TILE_N`` tokens a tile (``bitnet.hal.gpu_backend``); or, for a spec with a ``variant``, of
  the work-groups of the runtime's ``MatmulTile`` of that variant (its ``rows`` x ``tokens``).

Record and replay (optional): ``record()`` returns a context in which dispatches are also kept;
the ``Recording`` it yields replays them later, with the same buffers, in at most two host
submissions. What changes between replays must live in device buffers the kernels read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Protocol, Sequence

import numpy as np

ITEMS = "items"
GROUPS = "groups"
MATMUL = "matmul"


@dataclass(frozen=True)
class KernelSig:
    """A kernel's interface: its storage buffers in binding order, its scalars as a struct
    format (i = int32, f = float32) in argument order, and how its grid is counted."""

    buffers: tuple[str, ...]
    scalars: str
    grid: str  # ITEMS, GROUPS or MATMUL


# Every kernel a GPU plugin provides for GpuBackend. Names are the ops' (style rule 9).
KERNELS: dict[str, KernelSig] = {
    "embed": KernelSig(("table", "ids", "out"), "ii", ITEMS),  # row_bytes, K; spec fmt
    "embed_q6_k": KernelSig(("codes", "sub", "d", "ids", "out"), "i", ITEMS),  # K
    "rmsnorm": KernelSig(("x", "w", "out"), "if", GROUPS),  # K, eps
    "quantize_per_token_i8": KernelSig(("x", "q", "scale"), "i", GROUPS),  # K
    "quantize_q8_k": KernelSig(("x", "q", "d"), "i", GROUPS),  # K
    "linear_i2s": KernelSig(("codes", "q", "scale", "out"), "iiiff", MATMUL),
    "linear_tq": KernelSig(("codes", "block_d", "q", "act_d", "out"), "iiif", MATMUL),
    "linear_q6_k": KernelSig(("codes", "sub", "d", "q", "act_d", "out"), "iiif", MATMUL),
    "linear_float": KernelSig(("w", "x", "out"), "iiiif", MATMUL),  # row_bytes, K, n, M, scale
    # positions sit in a device buffer, "step": int32 [rows], row r's position (n tokens of
    # one sequence at pos hold pos .. pos+n-1; attention_rows' rows their own), so a recorded
    # step replays at new positions and B sequences run in one dispatch. "table": int32 block
    # tables [tables, T] (bitnet.hal.kv_blocks); scalars block (0: no table, position p is
    # cache row p; else KV_BLOCK) and table_stride (0: every row reads table 0; T: row r reads
    # table r) put position p of row r at cache row
    # table[r * table_stride + p / block] * block + p % block.
    "rope": KernelSig(("x", "cos", "sin", "step", "out"), "ii", ITEMS),  # n_heads, head_dim
    # kv_store: layer, n_ctx, width, block, table_stride
    "kv_store": KernelSig(("k", "v", "cache_k", "cache_v", "step", "table"), "iiiii", ITEMS),
    # attention is split-K (flash-decoding): the positions 0 .. span-1 fall in
    # splits = ceil(span / ATTENTION_SPLIT) runs of ATTENTION_SPLIT; work-group (h * splits + s,
    # r) (grid (n_heads * splits, rows)) attends query head h of row r over run s of its
    # positions (none past step[r]: a run beyond it exits at once) and writes the run's
    # record to "parts" f32 [rows, n_heads, splits, head_dim + 2]: m, l, o[head_dim] (its
    # softmax max, exp sum and output, o normalized within the run or not: the plugin's own
    # attention_combine reads it); attention_combine (grid (n_heads, rows)) merges the runs of
    # each head into "out". The grid depends on span, never on the positions.
    # attention scalars: layer, n_ctx, n_heads, n_kv_heads, head_dim, score scale, block,
    # table_stride, span (the scores scratch is [rows, n_heads, span], span > every position)
    "attention": KernelSig(("q", "cache_k", "cache_v", "step", "table", "scores", "parts"),
                           "iiiiifiii", GROUPS),
    # attention_combine scalars: n_heads, head_dim, span
    "attention_combine": KernelSig(("step", "parts", "out"), "iii", GROUPS),
    "add": KernelSig(("a", "b", "out"), "i", ITEMS),
    "relu2_mul": KernelSig(("a", "b", "out"), "i", ITEMS),
    "silu_mul": KernelSig(("a", "b", "out"), "i", ITEMS),
}

# attention's positions per work-group (a constant: results do not depend on the device)
ATTENTION_SPLIT = 256

# Reductions whose order a fused kernel must repeat (rmsnorm's sum, attention's exp sum) use a
# tree of this many virtual lanes whatever the work-group size (OpenCL, Vulkan: the runtime
# sizes their scratch; CUDA's rmsnorm tree is the same 256 lanes, kernels/norm.cuh)
REDUCE_LANES = 256

# The fused kernels of GpuBackend.decode_layer: one decode token's block in eight dispatches
# (with attention_combine), the bits of the ops above (each shares its arithmetic with the
# kernels it replaces, and the RMSNorm sum keeps the rmsnorm kernel's reduction tree whatever
# the work-group size). A runtime offers them where its ``fused_max_width`` (the widest row
# the matmul prologues hold in shared memory) is > 0; without them decode_layer is not offered.
FUSED_KERNELS: dict[str, KernelSig] = {
    # x f32 [1, K] -> rmsnorm(x, norm) quantized in each work-group's shared memory (prologue),
    # then q/k/v as one matmul: rows 0..Mq-1 of out from codes_q, then Mk of k, Mv of v.
    # Scalars: K, Mq, Mk, Mv, eps, then (I2_S) the three tensor scales, then three out_scales
    "norm_qkv_i2s": KernelSig(("x", "norm", "codes_q", "codes_k", "codes_v", "out"),
                              "iiiifffffff", MATMUL),
    "norm_qkv_tq": KernelSig(("x", "norm", "codes_q", "codes_k", "codes_v", "d_q", "d_k",
                              "d_v", "out"), "iiiiffff", MATMUL),
    # the same prologue, then gate and up rows j together: out[j] = act(gate_j, up_j).
    # Scalars: K, F, act (0 relu2_mul, 1 silu_mul), eps, (I2_S) two tensor scales, out_scales
    "norm_gate_up_i2s": KernelSig(("x", "norm", "codes_gate", "codes_up", "out"), "iiifffff",
                                  MATMUL),
    "norm_gate_up_tq": KernelSig(("x", "norm", "codes_gate", "codes_up", "d_gate", "d_up",
                                  "out"), "iiifff", MATMUL),
    # a sub-norm and the activation quantization of its output, one group per row: K, eps
    "rmsnorm_quantize_i8": KernelSig(("x", "w", "q", "scale"), "if", GROUPS),
    "rmsnorm_quantize_q8_k": KernelSig(("x", "w", "q", "d"), "if", GROUPS),
    # a matmul on quantized activations with the residual add as its epilogue: out = h + W x.
    # Scalars: K, M, (I2_S) the tensor scale, out_scale
    "linear_add_i2s": KernelSig(("codes", "q", "scale", "h", "out"), "iiff", MATMUL),
    "linear_add_tq": KernelSig(("codes", "block_d", "q", "act_d", "h", "out"), "iif", MATMUL),
    # RoPE of q and k from norm_qkv's out, the KV store and attention's split runs for one
    # token, grid (H * splits, 1) as attention's (parts alike; attention_combine follows); the
    # first run of the first head of each KV group stores its row, every group uses its own
    # f16-rounded k / v for the current position. Scalars: layer, n_ctx, n_heads, n_kv_heads,
    # head_dim, score scale, block (0: no table), span (scores scratch [H, span])
    "rope_attention": KernelSig(("qkv", "cos", "sin", "cache_k", "cache_v", "step", "table",
                                 "scores", "parts"), "iiiiifii", GROUPS),
}
KERNELS.update(FUSED_KERNELS)


@dataclass(frozen=True)
class KernelSpec:
    """A kernel and its compile-time specialization: ``fmt`` (a float format's value, for
    ``embed`` and ``linear_float``), for matmuls the work-group shape and K/256 blocks, and
    ``variant``: a runtime's other implementation of the same kernel (a ``MatmulTile``'s), with
    the table's buffers and scalars."""

    name: str
    fmt: str = ""
    lanes: int = 0
    rows: int = 0
    blocks: int = 0
    variant: str = ""

    @property
    def sig(self) -> KernelSig:
        return KERNELS[self.name]


@dataclass(frozen=True)
class MatmulTile:
    """A matmul variant a runtime offers besides the default work-group shape: kernel ``name``
    of ``kernels`` as ``KernelSpec(name, variant=variant)``, whose work-group covers ``rows``
    output rows x ``tokens`` tokens. GpuBackend picks it from ``min_tokens`` tokens on (e.g.
    CUDA's int8 tensor-core tiles for prompts, where the device has them)."""

    variant: str
    kernels: tuple[str, ...]
    rows: int
    tokens: int
    min_tokens: int


@dataclass(frozen=True)
class Limits:
    """What GpuBackend needs to know of a device to size matmul work-groups and tables."""

    simd_width: int  # subgroup / warp / preferred work-group multiple
    max_work_group: int  # invocations per work-group
    max_rows: int  # work-group size in y
    shared_memory: int  # bytes of work-group shared (local) memory
    max_buffer: int  # the largest single buffer, bytes
    fp64: bool  # float64 in kernels: rmsnorm and rope tables then match the reference exactly
    max_head_dim: int  # the largest head the attention kernel holds
    matmul_tiles: tuple[MatmulTile, ...] = ()  # matmul variants this device runs, if any


class Recording(Protocol):
    """Dispatches captured once, replayed with the same buffers."""

    def replay(self) -> None:
        """Submit the captured dispatches again (at most two host submissions)."""


class DeviceRuntime(Protocol):
    """One device through one GPU API. Memory handles are the API's own objects."""

    name: str  # "opencl", "vulkan", ...
    fingerprint: str  # device, driver and kernel digest: keys compiled-kernel caches
    limits: Limits
    submissions: int  # host submissions so far (kernel launches, queue submits, graph launches)
    # optional: ``fused_max_width`` (int), the widest row the FUSED_KERNELS' prologues hold;
    # absent or 0: the runtime has no FUSED_KERNELS and GpuBackend.prepare_layer returns None

    def allocate(self, nbytes: int) -> Any:
        """Device memory of at least nbytes; MemoryError naming the limit when too large."""

    def free(self, mem: Any) -> None:
        """Give memory back (work already queued that reads it still sees it)."""

    def copy_in(self, mem: Any, host: np.ndarray, offset: int = 0) -> None:
        """Host bytes into device memory at byte offset, ordered after queued work."""

    def copy_out(self, mem: Any, nbytes: int, offset: int = 0) -> np.ndarray:
        """nbytes of device memory -> a new host uint8 array (waits for queued work)."""

    def copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        """Device-to-device bytes, ordered with the dispatches."""

    def kernel(self, spec: KernelSpec) -> Any:
        """The compiled kernel for spec (built once, kept, cached on disk where the API can)."""

    def dispatch(self, kernel: Any, grid: tuple[int, ...], buffers: Sequence[Any],
                 scalars: Sequence[float]) -> None:
        """Queue one kernel run: buffers and scalars in the KERNELS order, grid as its
        KernelSig counts it."""

    def synchronize(self) -> None:
        """Wait for all queued work."""

    def close(self) -> None:
        """Free everything the runtime holds."""

    def info(self) -> dict[str, Any]:
        """Facts for receipts and ``bitnet devices`` (device name, kernel variants, ...)."""

    def record(self) -> ContextManager[Recording] | None:
        """Optional: a context capturing the dispatches queued inside it; None: no replay."""


def kernel_cache_dir(api: str) -> Path:
    """Where compiled kernels are kept: ``$BITNET_CACHE_DIR/kernels/<api>`` (else the user's
    cache directory)."""
    root = os.environ.get("BITNET_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bitnet")
    return Path(root) / "kernels" / api


class KernelCache:
    """Compiled kernel binaries on disk, one file per (device fingerprint, source key).

    ``get(key, build)`` returns the stored bytes, or builds, stores and returns them. A cache
    that cannot be written is only slower, never wrong: the key includes the device
    fingerprint and the source digest, so a driver or kernel change misses."""

    def __init__(self, api: str, fingerprint: str) -> None:
        self.folder = kernel_cache_dir(api)
        self.fingerprint = fingerprint

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(f"{self.fingerprint}\0{key}".encode()).hexdigest()[:32]
        return self.folder / f"{digest}.bin"

    def get(self, key: str, build: Callable[[], bytes]) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except OSError:
            pass
        binary = build()
        self.put(key, binary)
        return binary

    def put(self, key: str, binary: bytes) -> None:
        """Store (or replace) a binary; a read-only cache only makes the next start slower."""
        path = self.path(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(binary)
            tmp.replace(path)
        except OSError:
            pass  # read-only cache: rebuilt next time
