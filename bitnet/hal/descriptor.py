"""The descriptor: what a ``bitnet.backends`` entry point resolves to.

Importing a descriptor module must stay cheap: no driver bindings, no compiled extensions. Those
are imported inside ``probe()`` and ``create()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitnet.hal.backend import KernelBackend
from bitnet.hal.device import DeviceInfo, DeviceKind, Unavailable


@dataclass(frozen=True)
class CreateOptions:
    """User settings passed to ``create``."""

    threads: int | None = None  # CPU threads; None lets the backend choose


class BackendDescriptor:
    """Subclass and set the class attributes; implement ``probe`` and ``create``."""

    name: str = "unnamed"  # used in device specs: "cuda", "cuda:1"
    version: str = "0"  # the plugin distribution's version
    api_version: tuple[int, int] = (3, 3)  # inclusive range of bitnet.hal.API_VERSION it speaks
    kind: DeviceKind = DeviceKind.CPU
    priority: int = 0  # static rank when nothing was measured; higher wins
    distribution: str = ""  # pip name, used in remedies: "bitnet-cuda"

    def probe(self) -> list[DeviceInfo] | Unavailable:
        """List devices, or say why there are none. Cheap: no contexts, no kernel builds."""
        raise NotImplementedError(f"{type(self).__name__}.probe")

    def create(self, device: DeviceInfo, options: CreateOptions) -> KernelBackend:
        """Open ``device`` and return a ready backend (kernels built, context created)."""
        raise NotImplementedError(f"{type(self).__name__}.create")

    def fingerprint(self) -> str:
        """A hash of the plugin's kernel sources/binaries, part of the validation cache key.

        The default is the version; plugins should hash their kernel files."""
        return self.version
