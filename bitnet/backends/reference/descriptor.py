"""Entry point of the numpy reference backend (``bitnet.backends`` group, name "reference").

Importing this module stays cheap: numpy codecs and the backend load only in ``create``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bitnet.hal.backend import KernelBackend
from bitnet.hal.descriptor import BackendDescriptor, CreateOptions
from bitnet.hal.device import DeviceInfo, DeviceKind, Unavailable

# the sources whose numerics define this backend: a change to any of them re-validates it
_KERNEL_SOURCES = (
    Path(__file__).with_name("backend.py"),
    *sorted((Path(__file__).parents[2] / "formats").glob("*.py")),
)


class ReferenceDescriptor(BackendDescriptor):
    """Always available: plain numpy on the host CPU, ranked last (priority 0)."""

    name = "reference"
    version = "0.1.0"
    api_version = (3, 3)
    kind = DeviceKind.CPU
    priority = 0
    distribution = "bitnet"

    def probe(self) -> list[DeviceInfo] | Unavailable:
        return [DeviceInfo(backend=self.name, index=0, name="numpy reference (host CPU)",
                           kind=DeviceKind.CPU)]

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        # numpy decides its own threading; options.threads is ignored on purpose
        from bitnet.backends.reference.backend import ReferenceBackend

        return ReferenceBackend(device)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.version.encode())
        for path in _KERNEL_SOURCES:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


descriptor = ReferenceDescriptor()
