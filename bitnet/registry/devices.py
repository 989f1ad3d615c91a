"""``list_devices``: one record per (backend, device), with status, validation and score.

Devices that are available get validated (cached; ``revalidate=True`` refreshes) so that a backend
returning wrong numbers shows up here as "failed at stage validate", not at load time.
"""

from __future__ import annotations

from typing import Any, Callable

from bitnet.hal.descriptor import CreateOptions
from bitnet.hal.device_spec import parse_device_spec
from bitnet.registry.device_checks import DeviceCheck
from bitnet.registry.records import BackendSelectionError, DeviceRecord, Plugin
from bitnet.registry.selection import _Registry
from bitnet.registry.settings import read_settings


def _plugin_row(plugin: Plugin) -> DeviceRecord:
    row = DeviceRecord(plugin.name, plugin.version, None, "-", None, None, "ok",
                       priority=plugin.priority)
    if plugin.disabled:
        row.status = "disabled"
        row.reason = plugin.disabled
    elif plugin.failure is not None:
        row.status = "failed"
        row.stage = plugin.failure.stage
        row.cause = plugin.failure.cause
        row.remedy = plugin.failure.remedy
    elif plugin.unavailable is not None:
        row.status = "unavailable"
        row.reason = plugin.unavailable.reason
        row.remedy = plugin.unavailable.remedy
    return row


def _device_row(reg: _Registry, check: DeviceCheck) -> DeviceRecord:
    device = check.device
    plugin = check.plugin
    row = DeviceRecord(plugin.name, plugin.version, device.spec, device.name, device.kind.value,
                       device.memory_total, "ok", priority=plugin.priority,
                       emulated=device.emulated, stable_id=device.stable_id)
    if check.failure is not None:
        row.status = "failed"
        row.stage = check.failure.stage
        row.cause = check.failure.cause
        row.remedy = check.failure.remedy
    row.validated = check.validated
    row.validation_note = check.note
    row.score = reg.checker.last_score(check)
    return row


def _mark_same_hardware(rows: list[DeviceRecord]) -> None:
    """The same GPU seen through CUDA, OpenCL and Vulkan shares a stable id: link the rows."""
    by_id: dict[str, list[DeviceRecord]] = {}
    for row in rows:
        if row.stable_id and row.device:
            by_id.setdefault(row.stable_id, []).append(row)
    for group in by_id.values():
        for row in group:
            row.same_device_as = [r.device for r in group if r is not row]


def list_devices(revalidate: bool = False, validate: bool = True) -> list[DeviceRecord]:
    """Every installed backend and device with its status (never raises for a plugin's fault)."""
    reg = _Registry(read_settings(), revalidate)
    rows = []
    try:
        for name in sorted(reg.plugins):
            plugin = reg.probed(reg.plugins[name])
            if not plugin.ok or plugin.unavailable is not None or not plugin.devices:
                rows.append(_plugin_row(plugin))
                continue
            for device in plugin.devices:
                if validate:
                    check = reg.check(plugin, device, CreateOptions(), need_instance=False)
                else:
                    check = reg.checker.start(plugin, device)
                    reg.checker.peek(check)
                rows.append(_device_row(reg, check))
    finally:
        reg.close_all(keep=None)
    _mark_same_hardware(rows)
    return rows


def validate_devices(spec: str | None = None,
                     on_case: Callable[[str, Any], None] | None = None) -> list[DeviceCheck]:
    """Run the suite now (ignoring the cache, refreshing it) on the devices ``spec`` names:
    an explicit backend's devices (or one ``name:index``), or every available device for auto.
    Each returned check has ``result`` (a ValidationResult) or ``failure``."""
    settings = read_settings()
    parsed = parse_device_spec(spec or settings.default_device)
    reg = _Registry(settings, revalidate=True, on_case=on_case)
    checks = []
    try:
        for request in parsed.requests:
            names = sorted(reg.plugins) if request.is_auto else [request.backend]
            for name in names:
                plugin = reg.plugins.get(name)
                if plugin is None:
                    raise BackendSelectionError(f"backend {name!r} is not installed (fix: pip "
                                                f"install 'bitnet[{name}]')")
                plugin = reg.probed(plugin)
                if not plugin.ok or plugin.unavailable is not None:
                    if not request.is_auto:
                        raise BackendSelectionError(f"{name}: {_plugin_row(plugin).status_text()}")
                    continue
                for device in plugin.devices:
                    if request.index is not None and device.index != request.index:
                        continue
                    check = reg.checker.start(plugin, device)
                    reg.checks[device.spec] = check
                    reg.checker.create(check, CreateOptions())
                    if check.failure is None:
                        reg.checker.run_suite(check)
                    checks.append(check)
    finally:
        reg.close_all(keep=None)
    if not checks:
        raise BackendSelectionError(f"no device matches --device {parsed}")
    return checks
