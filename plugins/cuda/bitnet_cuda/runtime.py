"""CudaRuntime: bitnet.hal's DeviceRuntime over PyCUDA (one context, one non-blocking stream).

Kernels are the precompiled PTX of ``kernels/*.cu`` (``ptx.py``), one module per file loaded
once with ``module_from_buffer`` (the driver JIT-compiles it and keeps the machine code in its
own cache, ``~/.nv/ComputeCache``). Every kernel takes its buffers and then its scalars in the
order of ``bitnet.hal.device_runtime.KERNELS``; ``embed`` and ``linear_float`` have one entry
point per float format (``embed_f16``, ``linear_float_q8_0``, ...).

All work goes in order on one non-blocking stream, so it can be captured as a CUDA graph
(``graph.py``: the optional ``record`` verb).

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
import threading
from typing import Any, ContextManager, Sequence

import numpy as np

from bitnet.hal.device_runtime import GROUPS, ITEMS, KERNELS, KernelSpec, Limits

from bitnet_cuda import ptx

ITEMS_THREADS = 256  # block size of item grids (the kernels test x < count themselves)
GROUPS_THREADS = 256  # every reducing kernel's block (quantizers, rmsnorm, attention)
MAX_BLOCK = 256  # __launch_bounds__ of every kernel
WARP = 32
MAX_HEAD_DIM = 256  # attention.cu's ATT_MAX_DIM
SHARED_MEMORY = 48 * 1024  # static shared memory a block may use without opting in

# the .cu file (module) of each kernel in the table
MODULE_OF = {
    "embed": "embed", "embed_q6_k": "embed",
    "rmsnorm": "rmsnorm",
    "quantize_per_token_i8": "linear_ternary", "quantize_q8_k": "linear_ternary",
    "linear_i2s": "linear_ternary", "linear_tq": "linear_ternary",
    "linear_q6_k": "linear_float", "linear_float": "linear_float",
    "rope": "rope",
    "kv_store": "attention", "attention": "attention",
    "add": "add", "relu2_mul": "gating", "silu_mul": "gating",
}


FORMAT_ENTRIES = ("embed", "linear_float")  # one entry point per float format
FLOAT_FORMATS = ("f32", "f16", "bf16", "q8_0")  # their formats (Q6_K has kernels of its own)


def entry_name(spec: KernelSpec) -> str:
    """The PTX entry point of a kernel spec: the table's name, then the format if any."""
    return f"{spec.name}_{spec.fmt}" if spec.fmt else spec.name


def arg_format(spec: KernelSpec) -> str:
    """PyCUDA's prepare() signature: a pointer per buffer, then the scalars (i int32, f f32)."""
    sig = spec.sig
    return "P" * len(sig.buffers) + sig.scalars


def entry_points() -> dict[str, str]:
    """Every PTX entry point the table asks for -> its prepare() signature (tests check the
    PTX's parameters against it, and the CPU emulator builds its launchers from it)."""
    specs = [KernelSpec(name, fmt=fmt) for name in KERNELS
             for fmt in (FLOAT_FORMATS if name in FORMAT_ENTRIES else ("",))]
    return {entry_name(spec): arg_format(spec) for spec in specs}


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

    def __init__(self, cuda: Any, index: int) -> None:
        self.cuda = cuda
        dev = cuda.Device(index)
        self.device_name = dev.name()
        self.total_memory = int(dev.total_memory())
        self._context = dev.retain_primary_context()
        self._key = next(_RUNTIME_KEYS)  # this runtime's entry in each thread's _PUSHED
        self._here()
        self.arch = ptx.arch_for(dev.compute_capability())
        self.stream = cuda.Stream(flags=1)  # CU_STREAM_NON_BLOCKING: capturable
        self.submissions = 0
        self.fingerprint = f"{self.device_name}|{cuda.get_driver_version()}|{ptx.fingerprint()}"
        self.limits = Limits(simd_width=WARP, max_work_group=MAX_BLOCK, max_rows=MAX_BLOCK // WARP,
                             shared_memory=SHARED_MEMORY, max_buffer=self.total_memory,
                             fp64=True, max_head_dim=MAX_HEAD_DIM)
        self._modules: dict[str, Any] = {}
        self._kernels: dict[KernelSpec, CudaKernel] = {}

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
        self.cuda.memcpy_htod_async(int(mem) + offset, np.ascontiguousarray(host), self.stream)
        self.submissions += 1

    def copy_out(self, mem: Any, nbytes: int, offset: int = 0) -> np.ndarray:
        self._here()
        out = np.empty(nbytes, dtype=np.uint8)
        self.cuda.memcpy_dtoh_async(out, int(mem) + offset, self.stream)
        self.stream.synchronize()
        self.submissions += 1
        return out

    def copy(self, src: Any, src_offset: int, dst: Any, dst_offset: int, nbytes: int) -> None:
        self._here()
        self.cuda.memcpy_dtod_async(int(dst) + dst_offset, int(src) + src_offset, nbytes,
                                    self.stream)
        self.submissions += 1

    # -- kernels -----------------------------------------------------------------------------

    def kernel(self, spec: KernelSpec) -> CudaKernel:
        found = self._kernels.get(spec)
        if found is None:
            module_name = MODULE_OF[spec.name]
            module = self._modules.get(module_name)
            if module is None:
                self._here()
                module = self.cuda.module_from_buffer(ptx.read_ptx(module_name, self.arch))
                self._modules[module_name] = module
            function = module.get_function(entry_name(spec)).prepare(arg_format(spec))
            found = self._kernels[spec] = CudaKernel(spec, function)
        return found

    def launch_geometry(self, spec: KernelSpec,
                        grid: tuple[int, ...]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """The table's grid -> CUDA (grid, block)."""
        x, y = grid[0], grid[1]
        sig = spec.sig
        if sig.grid == ITEMS:
            return (-(-x // ITEMS_THREADS), y, 1), (ITEMS_THREADS, 1, 1)
        if sig.grid == GROUPS:
            return (x, y, 1), (GROUPS_THREADS, 1, 1)
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
        kernel.function.prepared_async_call(cuda_grid, block, self.stream, *args)
        self.submissions += 1

    # -- the rest ----------------------------------------------------------------------------

    def synchronize(self) -> None:
        self._here()
        self.stream.synchronize()

    def close(self) -> None:
        if self._context is None:
            return
        self.synchronize()
        self._kernels.clear()
        self._modules.clear()
        _pushed_here().pop(self._key, None)  # pop this thread's push (the guard pops)
        self._context = None

    def record(self) -> ContextManager[Any] | None:
        return None

    def info(self) -> dict[str, Any]:
        return {"device": self.device_name, "kernel": f"ptx compute_{self.arch}",
                "ptx": ptx.fingerprint(), "matmul": "warp per row"}

    def notes(self) -> tuple[str, ...]:
        return (f"PTX compute_{self.arch}, JIT-compiled by the driver",)


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
