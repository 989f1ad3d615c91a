"""Shared fixtures: one CpuBackend per kernel table this CPU can execute."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.hal import cpu_features
from bitnet.hal.backend import WeightTensor
from bitnet.hal.device import DeviceInfo, DeviceKind
from bitnet.hal.weight_formats import WeightFormat

from bitnet.backends.reference.backend import ReferenceBackend
from bitnet.formats.floats import quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack

# the shared conformance suite (test_api / test_validation / test_edge) runs on every table
pytest_plugins = ["bitnet.testing.conformance"]

CPU = DeviceInfo(backend="cpu", index=0, name="test cpu", kind=DeviceKind.CPU)
REF = DeviceInfo(backend="reference", index=0, name="numpy", kind=DeviceKind.CPU)


def real_flags() -> frozenset[str]:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        text = f.read()
    return cpu_features.parse_cpuinfo(text, cpu_features.probe().arch)[1]


def executable_variants() -> list:
    """Every table this build has, each skipped with a reason when this CPU cannot run it."""
    from bitnet_cpu.dispatch import required_features

    arch = cpu_features.probe().arch
    names = ["generic"]
    if arch in ("x86_64", "amd64"):
        names += ["avx2", "avx512"]
    if arch in ("aarch64", "arm64"):
        names += ["neon"]
    flags = real_flags()
    params = []
    for name in names:
        missing = [f for f in required_features(name) if f not in flags]
        marks = [pytest.mark.skip(reason=f"this CPU lacks {', '.join(missing)}")] if missing else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="module", params=executable_variants())
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def reference() -> ReferenceBackend:
    return ReferenceBackend(REF)


def make_backend(variant: str, threads: int = 2):
    from bitnet_cpu.backend import CpuBackend

    return CpuBackend(CPU, threads=threads, variant=variant)


def ternary_tensor(fmt: WeightFormat, values: np.ndarray, rng: np.random.Generator,
                   out_scale: float = 1.0) -> WeightTensor:
    """A WeightTensor of ternary int8 values [M, K] in ``fmt`` with random positive scales."""
    rows, cols = values.shape
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, float(rng.uniform(0.01, 2.0)))
    else:
        d = rng.uniform(0.001, 1.0, size=(rows, cols // 256)).astype(np.float32)
        pack = tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack
        data = pack(values, d)
    return WeightTensor("w", fmt, rows, cols, data, out_scale)


def float_tensor(fmt: WeightFormat, matrix: np.ndarray) -> WeightTensor:
    rows, cols = matrix.shape
    return WeightTensor("w", fmt, rows, cols, quantize_rows(fmt, matrix))


@pytest.fixture(scope="session")
def conformance_backend():
    """The conformance suite's backend, created through the entry point's descriptor: the table
    the CPU probe picks (set BITNET_CPU_FEATURES to run the suite on another one)."""
    from bitnet.hal import CreateOptions
    from bitnet_cpu.descriptor import descriptor

    devices = descriptor.probe()
    if not isinstance(devices, list):
        pytest.skip(str(devices))
    return descriptor.create(devices[0], CreateOptions(threads=2))
