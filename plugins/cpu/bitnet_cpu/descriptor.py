"""The ``cpu`` backend descriptor. Imports only bitnet.hal; the extension loads in create()."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from bitnet.hal import (
    BackendDescriptor,
    CreateOptions,
    DeviceInfo,
    DeviceKind,
    KernelBackend,
    Unavailable,
)
from bitnet.hal import cpu_features

REMEDY = "reinstall the plugin: pip install --force-reinstall --no-deps bitnet-cpu"


def _meminfo_bytes(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (SMT siblings counted once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (base / "physical_package_id").read_text().strip()
            core = (base / "core_id").read_text().strip()
        except OSError:
            return len(allowed)
        cores.add((package, core))
    return max(1, len(cores))


class CpuDescriptor(BackendDescriptor):
    name = "cpu"
    version = "0.1.0"
    api_version = (3, 3)
    kind = DeviceKind.CPU
    priority = 50  # above the numpy reference (the oracle), below validated GPUs
    distribution = "bitnet-cpu"

    def probe(self) -> list[DeviceInfo] | Unavailable:
        if importlib.util.find_spec("bitnet_cpu._kernels") is None:
            return Unavailable("the compiled extension failed to import: bitnet_cpu._kernels "
                               "is not built", REMEDY)
        try:
            from bitnet_cpu import _kernels  # noqa: F401  (cheap: no heavy dependencies)
        except ImportError as exc:
            return Unavailable(f"the compiled extension failed to import: {exc}", REMEDY)
        feats = cpu_features.probe()
        from bitnet_cpu.dispatch import variant_for

        isa = f"{feats.isa} ({variant_for(feats)} kernels)"
        return [DeviceInfo(backend=self.name, index=0, name=feats.model or feats.arch,
                           kind=DeviceKind.CPU, memory_total=_meminfo_bytes("MemTotal"),
                           memory_free=_meminfo_bytes("MemAvailable"), isa=isa)]

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        from bitnet_cpu.backend import CpuBackend

        if options.threads:
            return CpuBackend(device, threads=options.threads)
        from bitnet_cpu.threads import decode_threads

        cores = physical_cores()  # prompts: every core; decode: the bus knee (threads.py)
        return CpuBackend(device, threads=cores, decode_threads=decode_threads(cores))

    def fingerprint(self) -> str:
        """Hash of the kernel sources and the built extension (validation cache key)."""
        digest = hashlib.sha256(self.version.encode())
        here = Path(__file__).parent
        files = sorted((here / "kernels").glob("*.[ch]")) + [here / "_kernels.pyx"]
        spec = importlib.util.find_spec("bitnet_cpu._kernels")
        if spec is not None and spec.origin:
            files.append(Path(spec.origin))
        for path in files:
            try:
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"missing")
        return digest.hexdigest()[:16]


descriptor = CpuDescriptor()
