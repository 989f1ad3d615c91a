"""CudaRuntime: bitnet.hal's DeviceRuntime over PyCUDA (one context, one non-blocking stream).

Kernels are the precompiled PTX of ``kernels/*.cu`` (``ptx.py``), one module per file loaded
once with ``module_from_buffer`` (the driver JIT-compiles it and keeps the machine code in its
own cache, ``~/.nv/ComputeCache``). Every kernel takes its buffers and then its scalars in the
order of ``bitnet.hal.device_runtime.KERNELS``; ``embed`` and ``linear_float`` have one entry
point per float format (``embed_f16``, ``linear_float_q8_0``, ...).

Prompts on tensor cores: on sm_80 and newer the runtime declares ``MMA_TILE`` in its limits,
and GpuBackend then runs ``linear_i2s`` / ``linear_tq`` / ``linear_q6_k`` of 16 tokens or more
as their "mma" variants (``linear_i2s_mma`` ... in ``kernels/linear_mma.cu``, compute_80 PTX:
int8 ``mma.sync`` m16n8k32), with grids sized from the tile; below sm_80, or for fewer tokens,
the dp4a kernels run. Both give the same bits. ``BITNET_CUDA_MMA=0`` keeps every matmul on the
dp4a kernels (to measure what the tensor cores give).

All work goes in order on one non-blocking stream, so it can be captured as a CUDA graph
(``graph.py``: the optional ``record`` verb). While a recording lives, small host writes (a
step's token id and position, at most INBOX_PAYLOAD bytes) are staged on the host: a graph
replay carries them in a page-locked, device-mapped inbox that the graph's first kernel
(``kernels/inbox.cu``) copies to their buffers, so a replayed decode step is one graph launch
and one read; any other work first sends the staged writes as copies of their own.

Threads: a CUDA context is current per thread, and a server loads the model in one thread and
steps it in another, so every verb first makes the context current in the calling thread
(``_here``). PyCUDA aborts the process when a thread ends, or the interpreter exits, with a
context left on that thread's stack, so each push is popped in its own thread: when the thread
ends (a guard in a module-level thread-local, so it outlives the runtime), at exit (atexit) or on
``close`` (the closing thread's own push).
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np

from bitnet.hal.device_runtime import (FUSED_KERNELS, GROUPS, ITEMS, KERNELS, KernelSpec, Limits,
                                       MatmulTile)

from bitnet_cuda import graph, ptx

ITEMS_THREADS = 256  # block size of item grids (the kernels test x < count themselves)
GROUPS_THREADS = 256  # every reducing kernel's block (quantizers, rmsnorm, attention)
MAX_BLOCK = 256  # __launch_bounds__ of every kernel
WARP = 32
MAX_HEAD_DIM = 256  # attention.cu's ATT_MAX_DIM
SHARED_MEMORY = 48 * 1024  # static shared memory a block may use without opting in
FUSED_MAX_WIDTH = 16384  # decode_layer.cu's FUSED_MAX_K: the widest row its prologues hold
# the inbox (kernels/inbox.cu's #defines): int32 words
INBOX_HEADER = 4
INBOX_ENTRY = 8
INBOX_PAYLOAD = 16  # bytes a staged write holds at most
INBOX_CAPACITY = 32  # staged writes a replay carries (one thread each)
RUNTIME_ENTRIES = {"inbox": "Pi"}  # the runtime's own kernels (not in the KERNELS table)
# the int8 tensor-core GEMMs (kernels/linear_mma.cu's MMA_* #defines): a block of MMA_THREADS
# covers 64 rows x 64 tokens; worth it from 16 tokens on (an m16n8k32 needs 8 tokens, and below
# 16 the dp4a kernels' 8-token tiles waste less)
MMA_THREADS = 128
MMA_TILE = MatmulTile("mma", ("linear_i2s", "linear_tq", "linear_q6_k"), rows=64, tokens=64,
                      min_tokens=16)
VARIANT_MODULES = {"mma": "linear_mma"}  # the .cu file (module) of each variant
MMA_SWITCH = "BITNET_CUDA_MMA"  # "0": no tensor-core tiles (A/B measurements)

# the .cu file (module) of each kernel in the table
MODULE_OF = {
    "embed": "embed", "embed_q6_k": "embed",
    "rmsnorm": "rmsnorm",
    "quantize_per_token_i8": "linear_ternary", "quantize_q8_k": "linear_ternary",
    "linear_i2s": "linear_ternary", "linear_tq": "linear_ternary",
    "linear_q6_k": "linear_float", "linear_float": "linear_float",
    "rope": "rope",
    "kv_store": "attention", "attention": "attention", "attention_combine": "attention",
    "add": "add", "relu2_mul": "gating", "silu_mul": "gating",
    **{name: "decode_layer" for name in FUSED_KERNELS},
}


FORMAT_ENTRIES = ("embed", "linear_float")  # one entry point per float format
FLOAT_FORMATS = ("f32", "f16", "bf16", "q8_0")  # their formats (Q6_K has kernels of its own)


def entry_name(spec: KernelSpec) -> str:
    """The PTX entry point of a kernel spec: the table's name, then the format or the variant,
    if any."""
    suffix = spec.fmt or spec.variant
    return f"{spec.name}_{suffix}" if suffix else spec.name


def module_of(spec: KernelSpec) -> str:
    """The .cu file (module) holding a spec's entry point."""
    return VARIANT_MODULES[spec.variant] if spec.variant else MODULE_OF[spec.name]


def arg_format(spec: KernelSpec) -> str:
    """PyCUDA's prepare() signature: a pointer per buffer, then the scalars (i int32, f f32)."""
    sig = spec.sig
    return "P" * len(sig.buffers) + sig.scalars


def entry_points() -> dict[str, str]:
    """Every PTX entry point the table asks for -> its prepare() signature (tests check the
    PTX's parameters against it, and the CPU emulator builds its launchers from it)."""
    specs = [KernelSpec(name, fmt=fmt) for name in KERNELS
             for fmt in (FLOAT_FORMATS if name in FORMAT_ENTRIES else ("",))]
    specs += [KernelSpec(name, variant=MMA_TILE.variant) for name in MMA_TILE.kernels]
    return {**{entry_name(spec): arg_format(spec) for spec in specs}, **RUNTIME_ENTRIES}


class CudaKernel:
    """A prepared PyCUDA function and the spec it was built for."""

    __slots__ = ("spec", "function", "scalar_types")

    def __init__(self, spec: KernelSpec, function: Any) -> None:
        self.spec = spec
        self.function = function
        self.scalar_types = tuple(int if t == "i" else float for t in spec.sig.scalars)


class CudaRuntime:
    """One NVIDIA GPU through PyCUDA: memory, the shipped kernels and a non-blocking stream."""

    name = "cuda"
    fused_max_width = FUSED_MAX_WIDTH  # GpuBackend.prepare_layer: the FUSED_KERNELS are here

    def __init__(self, cuda: Any, index: int) -> None:
        self.cuda = cuda
        dev = cuda.Device(index)
        self.device_name = dev.name()
        self.total_memory = int(dev.total_memory())
        self._context = dev.retain_primary_context()
        self._key = next(_RUNTIME_KEYS)  # this runtime's entry in each thread's _PUSHED
        self._here()
        self.capability = tuple(dev.compute_capability())
        ptx.arch_for(self.capability, "linear_ternary")  # refuses a GPU below the base level
        tiles = ()
        if ptx.has_module(self.capability, "linear_mma") and os.environ.get(MMA_SWITCH) != "0":
            tiles = (MMA_TILE,)
        self.stream = cuda.Stream(flags=1)  # CU_STREAM_NON_BLOCKING: capturable
        self.submissions = 0
        self.fingerprint = f"{self.device_name}|{cuda.get_driver_version()}|{ptx.fingerprint()}"
        self.limits = Limits(simd_width=WARP, max_work_group=MAX_BLOCK, max_rows=MAX_BLOCK // WARP,
                             shared_memory=SHARED_MEMORY, max_buffer=self.total_memory,
                             fp64=True, max_head_dim=MAX_HEAD_DIM, matmul_tiles=tiles)
        self._modules: dict[str, Any] = {}
        self._kernels: dict[KernelSpec, CudaKernel] = {}
        self._graphs: graph.GraphApi | None = None  # loaded at the first record()
        self._capturing = False
        self._recordings = 0  # live recordings: small writes are staged while there are any
        self._staged: dict[int, np.ndarray] = {}  # device address -> bytes not yet sent
        self._inbox: np.ndarray | None = None  # int32, page-locked and device-mapped
        self._inbox_ptr = 0
        self._inbox_kernel: Any = None
        self._inbox_busy = False  # a launched graph may not have read the inbox yet

    # -- threads -----------------------------------------------------------------------------

    def _here(self) -> None:
        """Make the context current in the calling thread (once per thread)."""
        pushed = _pushed_here()
        if self._key not in pushed:
            self._context.push()
            pushed[self._key] = _Pushed(self.cuda)

    # -- memory ------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> Any:
        if nbytes > self.total_memory:
            raise MemoryError(f"a {nbytes}-byte buffer exceeds this GPU's memory "
                              f"({self.total_memory} bytes)")
        self._here()
        return self.cuda.mem_alloc(max(4, nbytes))

    def free(self, mem: Any) -> None:
        self._here()
        mem.free()

    def copy_in(self, mem: Any, host: np.ndarray, offset: int = 0) -> None:
        self._here()
        raw = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        address = int(mem) + offset
        if self._capturing:  # a constant input of the recording: written now, not captured
            self.cuda.memcpy_htod(address, raw)
            self.submissions += 1
            return
        if self._recordings and self._stage(address, raw):
            return
        self._flush()
        self.cuda.memcpy_htod_async(address, raw, self.stream)
        self.submissions += 1

    def _stage(self, address: int, raw: np.ndarray) -> bool:
        """Keep a small write for the next replay's inbox; False when it cannot be (too large,
        the inbox full, or overlapping a staged write of another extent)."""
        if raw.size > INBOX_PAYLOAD:
            return False
        end = address + raw.size
        for other, data in self._staged.items():
            if other < end and address < other + data.size and (other, data.size) != (
                    address, raw.size):
                return False
        if address not in self._staged and len(self._staged) >= INBOX_CAPACITY:
            return False
        self._staged[address] = raw.copy()
        return True

    def _flush(self) -> None:
        """Send the staged writes as copies of their own (work other than a replay follows)."""
        for address, raw in self._staged.items():
            self.cuda.memcpy_htod_async(address, raw, self.stream)
            self.submissions += 1
        self._staged.clear()

    def copy_out(self, mem: Any, nbytes: int, offset: int = 0) -> np.ndarray:
        if self._capturing:
            raise RuntimeError("bitnet-cuda: a read waits for the device: it cannot be recorded")
        self._here()
        self._flush()
        out = np.empty(nbytes, dtype=np.uint8)
        self.cuda.memcpy_dtoh_async(out, int(mem) + offset, self.stream)
        self.stream.synchronize()
        self._inbox_busy = False
        self.submissions += 1
        return out

    def copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        self._here()
        self._flush()
        self.cuda.memcpy_dtod_async(int(dst) + dst_offset, int(src) + src_offset, nbytes,
                                    self.stream)
        self.submissions += 1

    # -- kernels -----------------------------------------------------------------------------

    def kernel(self, spec: KernelSpec) -> CudaKernel:
        found = self._kernels.get(spec)
        if found is None:
            module = self._module(module_of(spec))
            function = module.get_function(entry_name(spec)).prepare(arg_format(spec))
            found = self._kernels[spec] = CudaKernel(spec, function)
        return found

    def _module(self, name: str) -> Any:
        """A kernel module, loaded at its first use from the PTX of this GPU's feature level."""
        module = self._modules.get(name)
        if module is None:
            self._here()
            arch = ptx.arch_for(self.capability, name)
            module = self._modules[name] = self.cuda.module_from_buffer(ptx.read_ptx(name, arch))
        return module

    def launch_geometry(self, spec: KernelSpec,
                        grid: tuple[int, ...]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """The table's grid -> CUDA (grid, block)."""
        x, y = grid[0], grid[1]
        sig = spec.sig
        if sig.grid == ITEMS:
            return (-(-x // ITEMS_THREADS), y, 1), (ITEMS_THREADS, 1, 1)
        if sig.grid == GROUPS:
            return (x, y, 1), (GROUPS_THREADS, 1, 1)
        if spec.variant:  # a MatmulTile's grid: one block of its threads a tile
            if not any(tile.variant == spec.variant and spec.name in tile.kernels
                       for tile in self.limits.matmul_tiles):
                raise ValueError(f"bitnet-cuda {spec.name}: no {spec.variant!r} variant on "
                                 f"this GPU (sm_{self.capability[0]}{self.capability[1]})")
            return (x, y, 1), (MMA_THREADS, 1, 1)
        if spec.lanes != WARP:  # MATMUL: one warp per row
            raise ValueError(f"bitnet-cuda {spec.name}: matmuls run one warp ({WARP} lanes) "
                             f"per row, not {spec.lanes}")
        return (x, y, 1), (spec.lanes * spec.rows, 1, 1)

    def dispatch(self, kernel: CudaKernel, grid: tuple[int, ...], buffers: Sequence[Any],
                 scalars: Sequence[float]) -> None:
        cuda_grid, block = self.launch_geometry(kernel.spec, grid)
        if cuda_grid[1] > 65535:
            raise ValueError(f"bitnet-cuda {kernel.spec.name}: gridDim.y {cuda_grid[1]} > 65535; "
                             "split the batch into smaller chunks")
        args = [int(b) for b in buffers]
        args += [kind(v) for kind, v in zip(kernel.scalar_types, scalars)]
        self._here()
        self._flush()
        kernel.function.prepared_async_call(cuda_grid, block, self.stream, *args)
        if not self._capturing:  # a captured launch is submitted by its graph's launches
            self.submissions += 1

    # -- the rest ----------------------------------------------------------------------------

    def synchronize(self) -> None:
        self._here()
        self._flush()
        self.stream.synchronize()
        self._inbox_busy = False

    def close(self) -> None:
        if self._context is None:
            return
        self.synchronize()
        self._kernels.clear()
        self._modules.clear()
        self._inbox_kernel = self._inbox = None
        _pushed_here().pop(self._key, None)  # pop this thread's push (the guard pops)
        self._context = None

    # -- record and replay (CUDA graphs) ------------------------------------------------------

    @contextmanager
    def record(self) -> Iterator[graph.CudaRecording]:
        """Capture the launches and device copies queued inside as a CUDA graph whose first
        node empties the inbox. Host writes inside run at once (constant inputs); reads raise."""
        self.synchronize()  # earlier work done: the capture's synchronous writes come after it
        if self._graphs is None:
            self._graphs = graph.GraphApi(graph.load_libcuda())
        if self._inbox is None:
            self._make_inbox()
        recording = graph.CudaRecording(self)
        handle = self.stream.handle
        self._graphs.begin_capture(handle)
        self._capturing = True
        try:
            self._inbox_kernel.prepared_async_call((1, 1, 1), (INBOX_CAPACITY, 1, 1), self.stream,
                                                   self._inbox_ptr, INBOX_CAPACITY)
            yield recording
        except BaseException:
            self._capturing = False
            try:
                self._graphs.destroy(self._graphs.end_capture(handle), None)
            except RuntimeError:
                pass  # the capture was invalidated already; the original error says why
            raise
        self._capturing = False
        recording.graph = self._graphs.end_capture(handle)
        recording.exe = self._graphs.instantiate(recording.graph)
        self._recordings += 1

    def _make_inbox(self) -> None:
        words = INBOX_HEADER + INBOX_CAPACITY * INBOX_ENTRY
        self._inbox = self.cuda.pagelocked_zeros(
            words, np.int32, mem_flags=self.cuda.host_alloc_flags.DEVICEMAP)
        self._inbox_ptr = int(self._inbox.base.get_device_pointer())
        self._inbox_kernel = self._module("inbox").get_function("inbox").prepare(
            RUNTIME_ENTRIES["inbox"])

    def launch_graph(self, exe: Any) -> None:
        """Replay a recording: the staged writes go in the inbox, then one graph launch."""
        self._here()
        if self._inbox_busy:  # the last replay may still be reading the inbox
            self.stream.synchronize()
        box = self._inbox
        as_bytes = box.view(np.uint8)
        for i, (address, raw) in enumerate(self._staged.items()):
            word = INBOX_HEADER + i * INBOX_ENTRY
            box[word:word + 2] = np.array([address], np.uint64).view(np.int32)
            box[word + 2] = raw.size
            as_bytes[4 * (word + 4):4 * (word + 4) + raw.size] = raw
        box[0] = len(self._staged)
        self._staged.clear()
        self._graphs.launch(exe, self.stream.handle)
        self._inbox_busy = True
        self.submissions += 1

    def drop_recording(self, recording: graph.CudaRecording) -> None:
        self._here()
        self.synchronize()
        self._graphs.destroy(recording.graph, recording.exe)
        self._recordings -= 1

    def info(self) -> dict[str, Any]:
        return {"device": self.device_name, "kernel": f"ptx {self._levels()}",
                "ptx": ptx.fingerprint(), "matmul": self._matmuls()}

    def notes(self) -> tuple[str, ...]:
        return (f"PTX {self._levels()}, JIT-compiled by the driver", self._matmuls())

    def _levels(self) -> str:
        """The PTX feature levels this GPU loads: "compute_75" or "compute_75 + compute_80"."""
        archs = sorted({ptx.arch_for(self.capability, m) for m in ptx.KERNEL_MODULES
                        if ptx.has_module(self.capability, m)})
        return " + ".join(f"compute_{a}" for a in archs)

    def _matmuls(self) -> str:
        if self.limits.matmul_tiles:
            return (f"warp per row (dp4a); int8 mma.sync m16n8k32 from {MMA_TILE.min_tokens} "
                    "tokens")
        return "warp per row (dp4a)"


_PUSHED = threading.local()  # .by_runtime: {runtime key: _Pushed} of the pushes of this thread
_RUNTIME_KEYS = itertools.count()


def _pushed_here() -> dict[int, "_Pushed"]:
    try:
        return _PUSHED.by_runtime
    except AttributeError:
        _PUSHED.by_runtime = {}
        return _PUSHED.by_runtime


class _Pushed:
    """One push of a runtime's context in one thread. Dropped when the thread ends (CPython
    clears a finished thread's locals in that thread; _PUSHED is module-level, so this holds
    even after the runtime is gone) or by ``close`` in the same thread; it then pops the context
    from that thread's stack."""

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda

    def __del__(self) -> None:
        self.cuda.Context.pop()


@atexit.register
def _leave_at_exit() -> None:
    """Pop every push of the main thread, while PyCUDA is still whole: PyCUDA aborts the
    process if a context is still on the main thread's stack when that stack is destroyed,
    after the atexit handlers have run."""
    _pushed_here().clear()
