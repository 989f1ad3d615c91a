"""``select``: turn a device spec and a model's requirements into one validated backend.

Pipeline per candidate device: fits memory -> validated (cached; creates the backend when not) ->
supports every op and format the model needs. ``auto`` ranks the survivors (tier: native devices
first, then emulated ones such as PoCL or lavapipe together with the reference oracle; within a
tier the measured score, else the static priority), lets a ``bitnet_rank_devices`` hook reorder
or veto, and logs ONE line naming what it skipped. An explicit device that cannot be used raises
BackendSelectionError naming the cause and the remedy; an ordered list tries its entries in turn.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

from bitnet.hal.backend import KernelBackend
from bitnet.hal.descriptor import CreateOptions
from bitnet.hal.device import DeviceInfo
from bitnet.hal.device_spec import DeviceRequest, DeviceSpec, parse_device_spec
from bitnet.registry import hooks
from bitnet.registry.cache import ResultCache
from bitnet.registry.device_checks import Checker, DeviceCheck, does_not_fit, missing
from bitnet.registry.discovery import discover, probe
from bitnet.registry.records import (
    BackendSelectionError,
    CandidateReport,
    Plugin,
    SelectionReport,
)
from bitnet.registry.requirements import ModelRequirements
from bitnet.registry.settings import ORACLE, Settings, read_settings

log = logging.getLogger("bitnet")


@dataclass
class Selection:
    backend: KernelBackend
    device: DeviceInfo
    report: SelectionReport


@dataclass
class RankedCandidate:
    """What a ``bitnet_rank_devices`` hook sees: one validated device and its rank facts."""

    backend: str
    device: DeviceInfo
    score: float | None  # measured G MAC/s, None when unmeasured
    priority: int  # the descriptor's static priority
    tier: int  # 0 native, 1 emulated or the reference oracle
    check: Any = None  # internal: the registry's DeviceCheck

    @property
    def spec(self) -> str:
        return self.device.spec


def _tier(check: DeviceCheck) -> int:
    """0: a native device; 1: an emulated one (PoCL, lavapipe) or the numpy oracle, which only
    win when no native backend validates (then by measured speed)."""
    if check.plugin.name == ORACLE or check.device.emulated:
        return 1
    return 0


def _rank_key(c: RankedCandidate) -> tuple:
    measured = c.score is not None
    return (c.tier, 0 if measured else 1, -(c.score or 0.0), -c.priority, c.backend,
            c.device.index)


class _Registry:
    """One pass over the installed plugins: discovery, probing, checks and a report."""

    def __init__(self, settings: Settings, revalidate: bool,
                 on_case: Callable[[str, Any], None] | None = None,
                 announce: Callable[[str], None] | None = None):
        self.settings = settings
        self.plugins = {p.name: p for p in discover(settings)}
        self.cache = ResultCache(settings.cache_dir)
        self.checker = Checker(self.cache, revalidate, on_case, announce)
        self.checks: dict[str, DeviceCheck] = {}

    def probed(self, plugin: Plugin) -> Plugin:
        probe(plugin)
        return plugin

    def check(self, plugin: Plugin, device: DeviceInfo, options: CreateOptions,
              need_instance: bool) -> DeviceCheck:
        check = self.checks.get(device.spec)
        if check is None:
            check = self.checker.start(plugin, device)
            self.checks[device.spec] = check
        self.checker.validate(check, options, need_instance)
        return check

    def close_all(self, keep: DeviceCheck | None) -> None:
        for check in self.checks.values():
            if check is not keep:
                check.close()


def _plugin_problem(plugin: Plugin | None, name: str) -> tuple[str, str, str] | None:
    """(outcome, reason, brief reason) when backend ``name`` has no device to offer, else None."""
    if plugin is None:
        return "unavailable", (f"backend {name!r} is not installed (fix: pip install "
                               f"'bitnet[{name}]' or the plugin that provides it)"), "not installed"
    if plugin.disabled:
        return "disabled", plugin.disabled, plugin.disabled
    if plugin.failure is not None:
        return "failed", str(plugin.failure), plugin.failure.brief
    if plugin.unavailable is not None:
        return "unavailable", f"unavailable: {plugin.unavailable}", plugin.unavailable.reason
    return None


def _evaluate(reg: _Registry, plugin: Plugin, device: DeviceInfo, needs: ModelRequirements | None,
              options: CreateOptions, report: SelectionReport) -> DeviceCheck | None:
    """Check one device; report it and return the check when it is usable."""
    too_big = does_not_fit(device, needs)
    if too_big:
        report.add(CandidateReport(plugin.name, device.spec, device.name, "skipped", too_big))
        return None
    check = reg.check(plugin, device, options, need_instance=False)
    if check.failure is not None:
        report.add(CandidateReport(plugin.name, device.spec, device.name, "failed",
                                   str(check.failure), brief=check.failure.brief))
        return None
    gap = missing(check.capabilities, needs)
    if gap:
        report.add(CandidateReport(plugin.name, device.spec, device.name, "skipped", gap))
        return None
    return check


def _usable(reg: _Registry, names: list[str], index: int | None,
            needs: ModelRequirements | None, options: CreateOptions,
            report: SelectionReport) -> list[DeviceCheck]:
    found = []
    for name in names:
        plugin = reg.plugins.get(name)
        if plugin is not None and plugin.ok:
            reg.probed(plugin)
        problem = _plugin_problem(plugin, name)
        if problem is not None:
            report.add(CandidateReport(name, None, "-", problem[0], problem[1],
                                       brief=problem[2]))
            continue
        devices = plugin.devices
        if index is not None:
            devices = [d for d in devices if d.index == index]
            if not devices:
                have = ", ".join(d.spec for d in plugin.devices)
                report.add(CandidateReport(name, f"{name}:{index}", "-", "unavailable",
                                           f"no device {name}:{index} (found: {have})"))
                continue
        for device in devices:
            check = _evaluate(reg, plugin, device, needs, options, report)
            if check is not None:
                found.append(check)
    return found


def _rank(reg: _Registry, usable: list[DeviceCheck], needs: ModelRequirements | None,
          options: CreateOptions, report: SelectionReport) -> list[RankedCandidate]:
    if len(usable) > 1:
        for check in usable:
            reg.checker.score(check, needs, options)
    ranked = sorted((RankedCandidate(c.plugin.name, c.device, c.score, c.plugin.priority,
                                     _tier(c), c) for c in usable), key=_rank_key)
    pm = hooks.plugin_manager([p.descriptor for p in reg.plugins.values() if p.ok],
                              report.notes)
    reordered = hooks.call_guarded(pm, "bitnet_rank_devices", report.notes,
                                   candidates=list(ranked), requirements=needs)
    if reordered is None:
        return ranked
    allowed = {id(c) for c in ranked}
    if not isinstance(reordered, list) or any(id(c) not in allowed for c in reordered):
        report.notes.append("bitnet_rank_devices returned something other than a sub-list of "
                            "its candidates (ignored)")
        return ranked
    for vetoed in (c for c in ranked if c not in reordered):
        report.add(CandidateReport(vetoed.backend, vetoed.spec, vetoed.device.name, "skipped",
                                   "vetoed by a bitnet_rank_devices hook"))
    return reordered


def _pick(reg: _Registry, ranked: list[RankedCandidate], options: CreateOptions,
          report: SelectionReport) -> DeviceCheck | None:
    """The first ranked candidate that opens; the rest are reported as lost."""
    winner = None
    for cand in ranked:
        check = cand.check
        score = check.score
        if winner is not None:
            why = f"ranked below {winner.spec}"
            report.add(CandidateReport(cand.backend, cand.spec, cand.device.name, "lost", why,
                                       score))
            continue
        reg.checker.create(check, options)
        if check.failure is not None:
            report.add(CandidateReport(cand.backend, cand.spec, cand.device.name, "failed",
                                       str(check.failure), brief=check.failure.brief))
            continue
        winner = check
        tier = "native" if cand.tier == 0 else "emulated/oracle tier"
        rank = "measured" if score is not None else f"priority {cand.priority}"
        why = f"validated ({check.note}); {tier}, {rank}"
        report.add(CandidateReport(cand.backend, cand.spec, cand.device.name, "won", why, score))
    return winner


def _names_for(reg: _Registry, request: DeviceRequest, tried: set[str]) -> list[str]:
    if request.is_auto:
        return [n for n in sorted(reg.plugins) if n not in tried]
    return [request.backend]


def _strict_failures(reg: _Registry, report: SelectionReport) -> list[str]:
    """Every plugin failure seen in this pass, once each."""
    causes = {f"{p.name}: {p.failure}" for p in reg.plugins.values() if p.failure is not None}
    causes |= {f"{c.device or c.backend}: {c.reason}" for c in report.candidates
               if c.outcome == "failed"}
    return sorted(causes)


def select(spec: str | DeviceSpec | None = None, requirements: ModelRequirements | None = None,
           options: CreateOptions | None = None, *, revalidate: bool = False,
           progress: bool | None = None) -> Selection:
    """Pick, validate and open the backend for ``spec`` (None: $BITNET_DEVICE, else auto).

    ``revalidate`` ignores cached verdicts and scores; ``progress`` announces a first-use
    validation on stderr (None: when stderr is a terminal). Raises BackendSelectionError when
    nothing usable matches the spec (or, with BITNET_STRICT=1, when any plugin failed), and
    ValueError for a malformed spec."""
    settings = read_settings()
    options = options or CreateOptions()
    if spec is None:
        spec = settings.default_device
    parsed = spec if isinstance(spec, DeviceSpec) else parse_device_spec(spec)
    report = SelectionReport(str(parsed))
    show = sys.stderr.isatty() if progress is None else progress
    reg = _Registry(settings, revalidate, announce=_print_stderr if show else None)
    winner = None
    tried: set[str] = set()
    try:
        for request in parsed.requests:
            names = _names_for(reg, request, tried)
            tried.update(names)
            usable = _usable(reg, names, request.index, requirements, options, report)
            winner = _pick(reg, _rank(reg, usable, requirements, options, report), options,
                           report)
            if winner is not None:
                break
    finally:
        reg.close_all(keep=winner)
    report.notes.extend(reg.cache.problems)
    for check in reg.checks.values():
        report.notes.extend(check.notes)
    if settings.strict:
        failures = _strict_failures(reg, report)
        if failures:
            if winner is not None:
                winner.close()
            raise BackendSelectionError("BITNET_STRICT=1 and a plugin failed: "
                                        + "; ".join(failures))
    if winner is None:
        raise BackendSelectionError(_no_device_message(parsed, report))
    report.chosen = winner.spec
    line = report.skip_line()
    if line:
        is_failure = any(c.outcome == "failed" for c in report.candidates)
        log.log(logging.WARNING if is_failure else logging.INFO, line)
    pm = hooks.plugin_manager([p.descriptor for p in reg.plugins.values() if p.ok], report.notes)
    hooks.call_guarded(pm, "bitnet_backend_selected", report.notes, report=report)
    return Selection(winner.instance, winner.device, report)


def _print_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _no_device_message(spec: DeviceSpec, report: SelectionReport) -> str:
    lines = [f"no usable device for --device {spec}:"]
    for c in report.candidates:
        lines.append(f"  {c.device or c.backend}: {c.reason}")
    if not report.candidates:
        lines.append("  no backend plugin is installed (reinstall bitnet: the reference backend "
                     "ships with it)")
    lines.append("`bitnet devices --explain` shows every backend; BITNET_DEVICE / --device pick "
                 "another")
    return "\n".join(lines)
