"""CUDA graphs through the driver API: capture a decode step's launches once, replay them.

PyCUDA (up to 2026.1) has no graph API, but its launches are plain ``cuLaunchKernel`` calls on
the stream they are given, so the driver's own capture works on ``Stream.handle``: five
functions of ``libcuda.so.1`` through ctypes (the library PyCUDA already loads), no new
dependency (``cuda-bindings`` would add a package for these five calls):

    cuStreamBeginCapture_v2(stream, RELAXED) -> the step's launches -> cuStreamEndCapture(&graph)
    -> cuGraphInstantiateWithFlags(&exec, graph, 0); per replay cuGraphLaunch(exec, stream)

Relaxed mode lets the capture allocate (the pool's buffers are allocated during the first
capture, then kept by the recording: nothing is allocated at replay) and write constant inputs
synchronously (rope tables). The capturing stream is non-blocking, so the legacy stream those
writes use does not join the capture.
"""

from __future__ import annotations

import ctypes
from typing import Any

CU_STREAM_CAPTURE_MODE_RELAXED = 2


def load_libcuda() -> Any:
    """The driver library (tests replace this with the fake driver's)."""
    return ctypes.CDLL("libcuda.so.1")


class GraphApi:
    """The driver calls a recording needs; each raises RuntimeError naming the call on error."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib

    def _check(self, result: int, call: str) -> None:
        if result != 0:
            raise RuntimeError(f"bitnet-cuda: {call} failed (CUresult {result})")

    def begin_capture(self, stream: int) -> None:
        self._check(self.lib.cuStreamBeginCapture_v2(ctypes.c_void_p(stream),
                                                     ctypes.c_int(CU_STREAM_CAPTURE_MODE_RELAXED)),
                    "cuStreamBeginCapture_v2")

    def end_capture(self, stream: int) -> ctypes.c_void_p:
        graph = ctypes.c_void_p()
        self._check(self.lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)),
                    "cuStreamEndCapture")
        return graph

    def instantiate(self, graph: ctypes.c_void_p) -> ctypes.c_void_p:
        exe = ctypes.c_void_p()
        self._check(self.lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph,
                                                         ctypes.c_ulonglong(0)),
                    "cuGraphInstantiateWithFlags")
        return exe

    def launch(self, exe: ctypes.c_void_p, stream: int) -> None:
        self._check(self.lib.cuGraphLaunch(exe, ctypes.c_void_p(stream)), "cuGraphLaunch")

    def destroy(self, graph: ctypes.c_void_p | None, exe: ctypes.c_void_p | None) -> None:
        if exe is not None and exe.value:
            self.lib.cuGraphExecDestroy(exe)
        if graph is not None and graph.value:
            self.lib.cuGraphDestroy(graph)


class CudaRecording:
    """One captured step: its graph, its executable graph and the runtime that replays it."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.graph: ctypes.c_void_p | None = None
        self.exe: ctypes.c_void_p | None = None

    def replay(self) -> None:
        if self.exe is None:
            raise RuntimeError("bitnet-cuda: this recording was not captured or is destroyed")
        self.runtime.launch_graph(self.exe)

    def destroy(self) -> None:
        if self.exe is not None or self.graph is not None:
            self.runtime.drop_recording(self)
        self.graph = self.exe = None
