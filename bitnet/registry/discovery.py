"""Find backend plugins through the ``bitnet.backends`` entry-point group, each one isolated.

Stages here: import (load the entry point: a cheap descriptor module), api (the descriptor's API
range against ``bitnet.hal.API_VERSION``, checked before ``probe`` does any heavy import) and probe
(list devices or say why there are none). A failure at any stage is recorded on the ``Plugin``;
nothing raises.
"""

from __future__ import annotations

import importlib.metadata as md
import traceback

from bitnet.hal.api import API_VERSION, check_api_version
from bitnet.hal.descriptor import BackendDescriptor
from bitnet.hal.device import DeviceInfo, Unavailable
from bitnet.registry.records import Plugin, PluginFailure
from bitnet.registry.settings import Settings

GROUP = "bitnet.backends"


def _entry_points() -> list[md.EntryPoint]:
    """Entry points of our group, first one per name (a dist seen twice on sys.path counts once)."""
    seen: dict[str, md.EntryPoint] = {}
    for ep in md.entry_points(group=GROUP):
        seen.setdefault(ep.name.lower(), ep)
    return sorted(seen.values(), key=lambda e: e.name)


def _describe(exc: BaseException) -> str:
    """``ExcType: message`` plus the innermost frame, so a user can see where it broke."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", "?"
    return dist.metadata["Name"] or "", dist.version or "?"


def _load(ep: md.EntryPoint, plugin: Plugin) -> None:
    """Stage import: resolve the entry point to a descriptor instance."""
    reinstall = f"reinstall {plugin.distribution or plugin.name} (bitnet's own plugins: " \
                f"scripts/install.sh)"
    hide = f"or hide it with BITNET_DISABLE_BACKENDS={plugin.name}"
    try:
        obj = ep.load()
        if isinstance(obj, type):
            obj = obj()
    except BaseException as exc:  # a plugin may raise anything, even SystemExit; isolate it
        if isinstance(exc, KeyboardInterrupt):
            raise
        plugin.failure = PluginFailure("import", _describe(exc), f"{reinstall}, {hide}")
        return
    if not isinstance(obj, BackendDescriptor):
        cause = f"entry point {ep.value} gave {type(obj).__name__}, not a BackendDescriptor"
        plugin.failure = PluginFailure("import", cause, f"report it to the plugin author; {hide}")
        return
    if obj.name.lower() != plugin.name:
        cause = f"entry point is named {plugin.name!r} but its descriptor says {obj.name!r}"
        plugin.failure = PluginFailure("import", cause, f"report it to the plugin author; {hide}")
        return
    plugin.descriptor = obj
    if plugin.version == "?":
        plugin.version = str(obj.version)
    if not plugin.distribution:
        plugin.distribution = obj.distribution or plugin.name


def _check_api(plugin: Plugin) -> None:
    """Stage api: refuse a plugin speaking another API before anything heavy runs."""
    descriptor = plugin.descriptor
    try:
        low, high = (int(v) for v in descriptor.api_version)
    except (TypeError, ValueError):
        cause = f"api_version must be (low, high) integers, got {descriptor.api_version!r}"
        plugin.failure = PluginFailure("api", cause, "report it to the plugin author")
        return
    problem = check_api_version(plugin.distribution or plugin.name, (low, high))
    if problem:
        _, _, fix = problem.partition(": ")
        cause = (f"API version mismatch: the plugin speaks {low}..{high}, "
                 f"bitnet speaks {API_VERSION}")
        plugin.failure = PluginFailure("api", cause, fix)


def discover(settings: Settings) -> list[Plugin]:
    """Every plugin of the group with its import/api outcome; disabled ones are listed only."""
    plugins: list[Plugin] = []
    for ep in _entry_points():
        distribution, version = _dist_of(ep)
        plugin = Plugin(name=ep.name.lower(), version=version, distribution=distribution)
        plugin.disabled = settings.plugin_allowed(plugin.name)
        plugins.append(plugin)
        if plugin.disabled:
            continue
        _load(ep, plugin)
        if plugin.descriptor is not None:
            _check_api(plugin)
    return plugins


def probe(plugin: Plugin) -> None:
    """Stage probe: fill ``plugin.devices`` or ``plugin.unavailable``; record a failure on error."""
    if not plugin.ok or plugin.probed:
        return
    plugin.probed = True
    remedy = f"reinstall {plugin.distribution} (bitnet's own plugins: scripts/install.sh), " \
             f"or hide it with BITNET_DISABLE_BACKENDS={plugin.name}"
    try:
        found = plugin.descriptor.probe()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        plugin.failure = PluginFailure("probe", _describe(exc), remedy)
        return
    if isinstance(found, Unavailable):
        plugin.unavailable = found
        return
    if not isinstance(found, (list, tuple)) or not all(isinstance(d, DeviceInfo) for d in found):
        cause = f"probe() returned {type(found).__name__}, expected list[DeviceInfo] | Unavailable"
        plugin.failure = PluginFailure("probe", cause, remedy)
        return
    if not found:
        plugin.unavailable = Unavailable("the backend found no device", "")
        return
    plugin.devices = list(found)
