"""Device specs: what ``--device``, ``device=`` and ``BITNET_DEVICE`` accept.

Grammar (case-insensitive; spaces around entries are ignored)::

    spec   := "auto" | entry ("," entry)*
    entry  := "auto" | name [":" index]
    name   := a backend name: letters, digits, "_" or "-", starting with a letter
    index  := a non-negative integer

``cuda`` means "the best device of backend cuda", ``cuda:1`` that backend's device 1, and an ordered
list ``cuda,cpu`` tries each entry in turn. ``auto`` inside a list (``cuda,auto``) means "then
anything else that validates".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYNTAX = ("auto | NAME[:INDEX][,NAME[:INDEX]...]  e.g. auto, cpu, reference, cuda, cuda:1, "
          "opencl:0, vulkan, cuda,cpu")
_ENTRY = re.compile(r"^([a-z][a-z0-9_-]*)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceRequest:
    """One entry of a spec: a backend name and optionally a device index (None: its best)."""

    backend: str
    index: int | None = None

    @property
    def is_auto(self) -> bool:
        return self.backend == "auto"

    def __str__(self) -> str:
        return self.backend if self.index is None else f"{self.backend}:{self.index}"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device spec: requests tried in order."""

    requests: tuple[DeviceRequest, ...]

    @property
    def is_auto(self) -> bool:
        """True for the plain ``auto`` spec (pick the best of everything)."""
        return len(self.requests) == 1 and self.requests[0].is_auto

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requests)


def parse_device_spec(text: str) -> DeviceSpec:
    """Parse ``text`` into a DeviceSpec; raise ValueError naming the accepted syntax."""
    if not isinstance(text, str):
        raise ValueError(f"device spec must be a string, got {type(text).__name__}; "
                         f"accepted: {SYNTAX}")
    cleaned = text.strip().lower()
    if not cleaned:
        raise ValueError(f"empty device spec; accepted: {SYNTAX}")
    requests: list[DeviceRequest] = []
    for part in (p.strip() for p in cleaned.split(",")):
        match = _ENTRY.match(part)
        if match is None:
            raise ValueError(f"bad device spec {text!r} (entry {part!r}); accepted: {SYNTAX}")
        name = match.group(1)
        index = match.group(2)
        if name == "auto" and index is not None:
            raise ValueError(f"bad device spec {text!r}: 'auto' takes no index; accepted: {SYNTAX}")
        request = DeviceRequest(name, int(index) if index is not None else None)
        if request in requests:
            raise ValueError(f"bad device spec {text!r}: {request} appears twice")
        requests.append(request)
    return DeviceSpec(tuple(requests))
