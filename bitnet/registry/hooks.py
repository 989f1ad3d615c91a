"""Policy hooks (pluggy): let an organisation or app reorder, veto or observe device selection.

Hooks (docs/design.md section 6):

- ``bitnet_rank_devices(candidates, requirements)``: firstresult. ``candidates`` is the ranked
  list of validated ``RankedCandidate`` records; return a reordered (possibly shorter: a veto)
  list, or None to keep the order.
- ``bitnet_backend_selected(report)``: observe the final ``SelectionReport``.

Implementations come from the ``bitnet.hooks`` entry-point group, from a backend descriptor that
defines a method of that name, or from the app through ``register(obj)``. Every call is guarded:
a raising hook becomes a note in the selection report and a warning, never a failed selection.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from typing import Any

import pluggy

PROJECT = "bitnet"
HOOK_GROUP = "bitnet.hooks"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
log = logging.getLogger("bitnet.registry")


class HookSpecs:
    @hookspec(firstresult=True)
    def bitnet_rank_devices(self, candidates: list[Any], requirements: Any) -> list[Any] | None:
        """Reorder or veto the ranked candidates; None keeps core's order."""

    @hookspec
    def bitnet_backend_selected(self, report: Any) -> None:
        """Observe the selection report (logging, telemetry)."""


_APP_PLUGINS: list[Any] = []


def register(obj: Any) -> None:
    """Register an app-level hook implementation (a module or object with ``@hookimpl``s)."""
    if obj not in _APP_PLUGINS:
        _APP_PLUGINS.append(obj)


def unregister(obj: Any) -> None:
    if obj in _APP_PLUGINS:
        _APP_PLUGINS.remove(obj)


def plugin_manager(descriptors: list[Any], notes: list[str]) -> pluggy.PluginManager:
    """A fresh manager with the app's, the entry points' and the descriptors' hooks."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    sources: list[tuple[str, Any]] = [(f"app:{i}", obj) for i, obj in enumerate(_APP_PLUGINS)]
    for ep in md.entry_points(group=HOOK_GROUP):
        try:
            sources.append((f"entry point {ep.name}", ep.load()))
        except Exception as exc:
            notes.append(f"hook plugin {ep.name} failed to import: {type(exc).__name__}: {exc}")
    for descriptor in descriptors:
        if any(hasattr(descriptor, name) for name in ("bitnet_rank_devices",
                                                      "bitnet_backend_selected")):
            sources.append((f"backend {descriptor.name}", descriptor))
    for label, obj in sources:
        try:
            pm.register(obj, name=label)
        except Exception as exc:
            notes.append(f"hook {label} could not be registered: {type(exc).__name__}: {exc}")
    return pm


def call_guarded(pm: pluggy.PluginManager, hook: str, notes: list[str], **kwargs: Any) -> Any:
    """Call ``hook``; on an exception, note it, warn, and return None."""
    try:
        return getattr(pm.hook, hook)(**kwargs)
    except Exception as exc:
        note = f"hook {hook} raised {type(exc).__name__}: {exc} (ignored)"
        notes.append(note)
        log.warning("bitnet: %s", note)
        return None
