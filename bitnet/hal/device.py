"""Devices, capabilities and unavailability, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from bitnet.hal.weight_formats import WeightFormat
from bitnet.hal.ops import Op


class DeviceKind(str, Enum):
    CPU = "cpu"
    DGPU = "dgpu"
    IGPU = "igpu"
    ACCEL = "accel"


@dataclass(frozen=True)
class DeviceInfo:
    """One device a backend can drive. ``stable_id`` de-duplicates a GPU seen through several APIs."""

    backend: str  # the descriptor's name, e.g. "cuda"
    index: int  # position among this backend's devices: "cuda:1" is index 1
    name: str  # human name, e.g. "NVIDIA H100 80GB HBM3"
    kind: DeviceKind
    memory_total: int | None = None  # bytes, None when unknown
    memory_free: int | None = None
    stable_id: str | None = None  # "pci:0000:65:00.0" or "uuid:..." where the API has one
    driver_version: str | None = None
    runtime_version: str | None = None
    isa: str | None = None  # CPU: "avx2+fma+f16c"; CUDA: "sm_90"; ...
    emulated: bool = False  # a CPU pretending to be a GPU (PoCL, lavapipe): ranked below native CPU

    @property
    def spec(self) -> str:
        return f"{self.backend}:{self.index}"


@dataclass(frozen=True)
class Capabilities:
    """What a backend instance can do. The registry reads this; it never inspects the class."""

    ops: frozenset[Op]
    ternary_formats: frozenset[WeightFormat]  # formats linear_ternary accepts
    float_formats: frozenset[WeightFormat]  # formats linear_float and embed accept
    max_context: int | None = None  # None: limited only by memory
    max_batch: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Unavailable:
    """Why a backend has no usable device here, and how a user can fix that."""

    reason: str  # "no NVIDIA driver (libcuda.so.1 not found)"
    remedy: str  # "install the NVIDIA driver"

    def __str__(self) -> str:
        return f"{self.reason} (fix: {self.remedy})" if self.remedy else self.reason
