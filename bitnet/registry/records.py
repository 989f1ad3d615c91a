"""Plain records the registry produces: failures, plugins, candidates and device rows.

Every way a plugin can go wrong is a ``PluginFailure`` (stage, cause, remedy): data a user reads in
``bitnet devices``, never an exception that escapes ``import bitnet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitnet.hal.descriptor import BackendDescriptor
from bitnet.hal.device import DeviceInfo, Unavailable

STAGES = ("import", "api", "probe", "create", "capabilities", "validate", "bench", "hook")


class BackendSelectionError(RuntimeError):
    """No usable backend for the requested device spec; the message says why and how to fix it."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin broke at ``stage`` (one of STAGES) because of ``cause``; ``remedy`` fixes it."""

    stage: str
    cause: str
    remedy: str = ""

    def __str__(self) -> str:
        text = f"failed at stage {self.stage}: {self.cause}"
        return f"{text}; {self.remedy}" if self.remedy else text

    @property
    def brief(self) -> str:
        """Stage and the cause's first clause, for one-line logs."""
        cause = self.cause.split(" (at ", 1)[0]
        cause = cause if len(cause) <= 90 else cause[:87] + "..."
        return f"failed at stage {self.stage}: {cause}"


@dataclass
class Plugin:
    """One ``bitnet.backends`` entry point and what became of it."""

    name: str  # the entry point name (== descriptor.name once loaded)
    version: str  # the distribution's version ("?" when unknown)
    distribution: str  # pip name, for remedies
    descriptor: BackendDescriptor | None = None
    failure: PluginFailure | None = None
    disabled: str | None = None  # why settings keep it out (env var named)
    probed: bool = False
    devices: list[DeviceInfo] = field(default_factory=list)
    unavailable: Unavailable | None = None

    @property
    def ok(self) -> bool:
        return self.descriptor is not None and self.failure is None and self.disabled is None

    @property
    def priority(self) -> int:
        return int(getattr(self.descriptor, "priority", 0) or 0)


@dataclass
class DeviceRecord:
    """One row of ``bitnet devices``: a (backend, device) pair, or a backend with no device."""

    backend: str
    plugin_version: str
    device: str | None  # spec such as "cuda:0"; None when the backend has no device
    name: str  # human device name ("-" when none)
    kind: str | None
    memory_total: int | None
    status: str  # "ok", "unavailable", "failed", "disabled"
    reason: str = ""  # unavailable / disabled: why
    remedy: str = ""
    stage: str | None = None  # failed: the stage
    cause: str = ""  # failed: the cause
    validated: bool | None = None  # None: not run (not ok, or unknown)
    validation_note: str = ""  # "cached", "oracle", "3/41 cases failed", ...
    score: float | None = None  # measured G MAC/s on the last benchmarked shapes
    priority: int = 0
    emulated: bool = False
    stable_id: str | None = None
    same_device_as: list[str] = field(default_factory=list)  # other backends' specs, same hw

    def status_text(self) -> str:
        if self.status == "failed":
            text = f"failed at stage {self.stage}: {self.cause}"
            return f"{text} (fix: {self.remedy})" if self.remedy else text
        if self.status in ("unavailable", "disabled"):
            text = f"{self.status}: {self.reason}"
            return f"{text} (fix: {self.remedy})" if self.remedy else text
        return self.status

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CandidateReport:
    """How one candidate fared in a selection."""

    backend: str
    device: str | None  # "cuda:0", or None for a backend-level outcome
    device_name: str
    outcome: str  # "won", "lost", "skipped", "failed", "unavailable", "disabled"
    reason: str
    score: float | None = None
    brief: str = ""  # a short reason for the one-line log (default: reason)


@dataclass
class SelectionReport:
    """Why a selection picked what it picked: every candidate with its outcome."""

    spec: str
    chosen: str | None = None
    candidates: list[CandidateReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # hook failures, cache problems

    def add(self, entry: CandidateReport) -> None:
        self.candidates.append(entry)

    def skipped(self) -> list[CandidateReport]:
        return [c for c in self.candidates if c.outcome in ("failed", "skipped", "unavailable")]

    def skip_line(self) -> str:
        """One line naming what was skipped and why (empty when nothing was)."""
        parts = [f"{c.device or c.backend} ({c.brief or c.reason})" for c in self.skipped()]
        if not parts:
            return ""
        return (f"bitnet: using {self.chosen}; skipped " + "; ".join(parts)
                + " (`bitnet devices --explain` for details)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "chosen": self.chosen,
            "candidates": [dict(c.__dict__) for c in self.candidates],
            "notes": list(self.notes),
        }

    def text(self) -> str:
        lines = [f"device spec: {self.spec}", f"chosen: {self.chosen or 'nothing'}"]
        for c in self.candidates:
            where = c.device or c.backend
            score = f" [{c.score:.2f} GMAC/s]" if c.score else ""
            lines.append(f"  {c.outcome:<11} {where:<14} {c.device_name}{score}: {c.reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
