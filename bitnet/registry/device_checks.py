"""Per-device checks shared by selection and ``bitnet devices``: fit, create, capabilities and
validation (cached, crash-guarded) and benchmark scores (cached).

Every step is guarded: a plugin exception becomes a ``PluginFailure`` with its stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bitnet.hal.backend import KernelBackend
from bitnet.hal.descriptor import CreateOptions
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.weight_formats import WeightFormat
from bitnet.hal.ops import Op
from bitnet.registry import bench
from bitnet.registry.cache import ResultCache, fingerprint, key_of
from bitnet.registry.discovery import _describe
from bitnet.registry.records import Plugin, PluginFailure
from bitnet.registry.requirements import ModelRequirements
from bitnet.registry.settings import ORACLE

log = logging.getLogger("bitnet.registry")
CRASH_CAUSE = "crashed the process in a previous run; `bitnet devices --revalidate` retries"


@dataclass
class DeviceCheck:
    """What the registry knows about one (plugin, device) after checking it."""

    plugin: Plugin
    device: DeviceInfo
    key: str
    instance: KernelBackend | None = None
    capabilities: Capabilities | None = None
    failure: PluginFailure | None = None
    validated: bool | None = None
    note: str = ""  # "cached", "oracle", the validation summary
    score: float | None = None
    notes: list[str] = field(default_factory=list)
    result: Any = None  # the ValidationResult when the suite ran in this process

    @property
    def spec(self) -> str:
        return self.device.spec

    @property
    def ok(self) -> bool:
        return self.failure is None and self.validated is True

    def close(self) -> None:
        if self.instance is not None:
            try:
                self.instance.close()
            except Exception as exc:
                self.notes.append(f"{self.spec}: close() raised {type(exc).__name__}: {exc}")
            self.instance = None


def _caps_to_dict(caps: Capabilities) -> dict[str, list[str]]:
    return {
        "ops": sorted(o.value for o in caps.ops),
        "ternary": sorted(f.value for f in caps.ternary_formats),
        "float": sorted(f.value for f in caps.float_formats),
    }


def _caps_from_dict(data: Any) -> Capabilities | None:
    try:
        return Capabilities(frozenset(Op(o) for o in data["ops"]),
                            frozenset(WeightFormat(f) for f in data["ternary"]),
                            frozenset(WeightFormat(f) for f in data["float"]))
    except (KeyError, TypeError, ValueError):
        return None


def missing(caps: Capabilities, needs: ModelRequirements | None) -> str:
    """What the model needs that ``caps`` lacks ("" when nothing)."""
    if needs is None:
        return ""
    gaps = []
    ops = sorted(o.value for o in needs.ops - caps.ops)
    if ops:
        gaps.append("op " + ", ".join(ops))
    fmts = sorted(f.value for f in (needs.ternary_formats - caps.ternary_formats)
                  | (needs.float_formats - caps.float_formats))
    if fmts:
        gaps.append("format " + ", ".join(fmts))
    return "lacks " + " and ".join(gaps) if gaps else ""


def does_not_fit(device: DeviceInfo, needs: ModelRequirements | None) -> str:
    if needs is None or not needs.weight_bytes or not device.memory_total:
        return ""
    if needs.weight_bytes <= device.memory_total:
        return ""
    gib = 1024 ** 3
    return (f"the weights need {needs.weight_bytes / gib:.2f} GiB, the device has "
            f"{device.memory_total / gib:.2f} GiB")


class Checker:
    """Runs the checks for one registry pass, against one cache."""

    def __init__(self, cache: ResultCache, revalidate: bool = False,
                 on_case: Callable[[str, Any], None] | None = None,
                 announce: Callable[[str], None] | None = None):
        from bitnet.registry.validation import SUITE_VERSION

        self.announce = announce  # tells the user why this first run pauses
        self.cache = cache
        self.revalidate = revalidate
        self.suite_version = SUITE_VERSION
        self.on_case = on_case  # progress callback: (spec, CaseResult)

    def start(self, plugin: Plugin, device: DeviceInfo) -> DeviceCheck:
        key = key_of(fingerprint(plugin, device, self.suite_version))
        return DeviceCheck(plugin, device, key)

    def create(self, check: DeviceCheck, options: CreateOptions) -> None:
        """Stage create (and capabilities): open the device."""
        if check.instance is not None or check.failure is not None:
            return
        plugin = check.plugin
        remedy = f"see the plugin's docs; hide it with BITNET_DISABLE_BACKENDS={plugin.name}"
        try:
            instance = plugin.descriptor.create(check.device, options)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            check.failure = PluginFailure("create", _describe(exc), remedy)
            return
        caps = getattr(instance, "capabilities", None)
        if not isinstance(caps, Capabilities):
            check.failure = PluginFailure("capabilities", f"capabilities is "
                                          f"{type(caps).__name__}, not Capabilities", remedy)
            return
        check.instance = instance
        check.capabilities = caps

    def validate(self, check: DeviceCheck, options: CreateOptions,
                 need_instance: bool = False) -> None:
        """Stage validate: cached verdict, or run the suite (creating the backend) under a crash
        marker. Fills ``validated``/``note``/``capabilities`` or ``failure``."""
        if check.failure is not None:
            return
        if self.revalidate:
            self.cache.crash_clear(check.key)
        elif self.cache.crashed(check.key) is not None:
            check.failure = PluginFailure("validate", CRASH_CAUSE,
                                          f"or hide it with BITNET_DISABLE_BACKENDS="
                                          f"{check.plugin.name}")
            return
        cached = None if self.revalidate else self.cache.read("validation", check.key)
        if cached is not None and isinstance(cached.get("passed"), bool):
            caps = _caps_from_dict(cached.get("capabilities"))
            if caps is not None:
                self._use_cached(check, cached, caps)
                if check.failure is None and need_instance:
                    self.create(check, options)
                return
        self.create(check, options)
        if check.failure is not None:
            return
        if check.plugin.name == ORACLE:
            check.validated = True
            check.note = "oracle (the reference every backend is checked against)"
            return
        self.run_suite(check)

    def peek(self, check: DeviceCheck) -> None:
        """Fill ``check`` from the cache and crash markers only: never creates or validates."""
        if self.cache.crashed(check.key) is not None:
            check.failure = PluginFailure("validate", CRASH_CAUSE)
            return
        cached = self.cache.read("validation", check.key)
        caps = _caps_from_dict((cached or {}).get("capabilities"))
        if cached is not None and isinstance(cached.get("passed"), bool) and caps is not None:
            self._use_cached(check, cached, caps)

    def _use_cached(self, check: DeviceCheck, cached: dict[str, Any], caps: Capabilities) -> None:
        check.capabilities = caps
        if cached["passed"]:
            check.validated = True
            check.note = f"cached: {cached.get('summary', 'passed')}"
            return
        check.validated = False
        check.failure = PluginFailure("validate", f"wrong results: {cached.get('summary')}",
                                      f"report it to the plugin author with `bitnet validate "
                                      f"--device {check.spec}`; hide it with "
                                      f"BITNET_DISABLE_BACKENDS={check.plugin.name}")

    def run_suite(self, check: DeviceCheck) -> None:
        """Run the suite on the created ``check.instance`` and cache the verdict."""
        from bitnet.registry.validation import validate_backend

        on_result = None
        if self.on_case is not None:
            def on_result(result: Any) -> None:
                self.on_case(check.spec, result)
        if self.announce is not None:
            self.announce(f"bitnet: validating {check.spec} against the reference backend "
                          f"(first use of this backend version; the verdict is cached)")
        # The marker outlives the process only if the process dies inside the suite (a segfault,
        # os._exit); an exception or Ctrl-C removes it, so neither is mistaken for a crash.
        self.cache.crash_mark(check.key, check.spec)
        try:
            result = validate_backend(check.instance, on_result=on_result)
        except Exception as exc:  # the oracle itself broke: not the candidate's fault, still fatal
            check.failure = PluginFailure("validate", f"the suite could not run: "
                                          f"{_describe(exc)}", "reinstall bitnet")
            return
        finally:
            self.cache.crash_clear(check.key)
        check.result = result
        record = result.to_dict()
        record["capabilities"] = _caps_to_dict(check.capabilities)
        record["time"] = time.time()
        record["device"] = check.spec
        self.cache.write("validation", check.key, record)
        self._use_cached(check, record, check.capabilities)
        if result.passed:
            check.note = result.summary()

    def score(self, check: DeviceCheck, needs: ModelRequirements | None,
              options: CreateOptions) -> None:
        """Stage bench: a cached or freshly measured score on the model's shapes."""
        if needs is None or not needs.linear_shapes or check.capabilities is None:
            return
        cached = self.cache.read("bench", check.key) or {}
        shapes_all = needs.linear_shapes
        if check.instance is None:
            self.create(check, options)
            if check.failure is not None:
                return
        shapes = bench.bench_shapes(shapes_all, check.instance)
        if not shapes:
            return
        label = bench.shapes_key(shapes)
        value = cached.get(label) if not self.revalidate else None
        if isinstance(value, (int, float)):
            check.score = float(value)
            return
        try:
            check.score = bench.measure(check.instance, shapes)
        except Exception as exc:
            check.notes.append(f"{check.spec}: benchmark failed ({_describe(exc)}); ranked by "
                               f"static priority")
            return
        cached[label] = check.score
        cached["last"] = check.score
        self.cache.write("bench", check.key, cached)

    def last_score(self, check: DeviceCheck) -> float | None:
        value = (self.cache.read("bench", check.key) or {}).get("last")
        return float(value) if isinstance(value, (int, float)) else None
