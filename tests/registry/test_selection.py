"""Selection rules (docs/design.md 5): env settings, override order, explicit errors, ordered lists,
requirements, ranking tiers, cached benchmarks and the pluggy policy hooks."""

from __future__ import annotations

import logging

import pytest

from bitnet.hal.weight_formats import WeightFormat
from bitnet.hal.ops import ALL_OPS
from bitnet.registry import BackendSelectionError, list_devices, select
from bitnet.registry import hooks
from bitnet.registry.requirements import LinearShape, ModelRequirements


def _rows(**filters):
    return {r.backend: r for r in list_devices(**filters)}


def _needs(*ternary: WeightFormat, weight_bytes: int = 0, shapes=()) -> ModelRequirements:
    return ModelRequirements(ALL_OPS, frozenset(ternary), frozenset({WeightFormat.F16}),
                             tuple(shapes), 64, weight_bytes)


def test_disabled_plugins_are_listed_but_never_imported(fake_plugins, monkeypatch):
    fake_plugins("fakegood", "fakebroken")
    monkeypatch.setenv("BITNET_DISABLE_BACKENDS", "fakebroken, other")
    rows = _rows()
    assert rows["fakebroken"].status == "disabled"  # importing it would have failed
    assert "BITNET_DISABLE_BACKENDS" in rows["fakebroken"].reason
    assert rows["fakegood"].status == "ok"


def test_allow_list_keeps_others_out_and_reference_in(fake_plugins, monkeypatch):
    fake_plugins("fakegood", "fakebroken")
    monkeypatch.setenv("BITNET_PLUGINS", "fakegood")
    rows = _rows()
    assert rows["fakebroken"].status == "disabled"
    assert "BITNET_PLUGINS" in rows["fakebroken"].reason
    assert rows["reference"].status == "ok"  # the oracle cannot be disabled
    monkeypatch.setenv("BITNET_DISABLE_BACKENDS", "reference")
    assert _rows()["reference"].status == "ok"


def test_an_entry_point_may_name_the_descriptor_class(fake_plugins):
    fake_plugins("fakeclass")
    assert _rows()["fakeclass"].status == "ok"


def test_override_order_device_then_env_then_auto(fake_plugins, monkeypatch):
    fake_plugins("fakegood")
    monkeypatch.delenv("BITNET_DEVICE", raising=False)  # a run with BITNET_DEVICE=cuda, say
    assert select().device.spec == "fakegood:0"  # auto: a native backend beats the oracle
    monkeypatch.setenv("BITNET_DEVICE", "reference")
    assert select().device.spec == "reference:0"
    assert select(None).device.spec == "reference:0"
    assert select("fakegood").device.spec == "fakegood:0"  # device= beats BITNET_DEVICE


def test_ordered_list_tries_in_order(fake_plugins):
    fake_plugins("fakegood", "fakeabsent")
    selection = select("fakeabsent,nosuch,reference,fakegood")
    assert selection.device.spec == "reference:0"
    outcomes = {c.backend: c.outcome for c in selection.report.candidates}
    assert outcomes["fakeabsent"] == "unavailable" and outcomes["nosuch"] == "unavailable"
    assert "fakegood" not in outcomes  # never reached
    assert select("fakeabsent,auto").device.spec == "fakegood:0"


def test_explicit_errors_name_the_cause_and_the_fix(fake_plugins):
    fake_plugins("fakegood")
    with pytest.raises(BackendSelectionError, match=r"no device fakegood:3 \(found: fakegood:0\)"):
        select("fakegood:3")
    with pytest.raises(BackendSelectionError, match=r"'nosuch' is not installed.*bitnet\[nosuch\]"):
        select("nosuch")
    with pytest.raises(ValueError, match="accepted"):
        select("cuda:one")


def test_requirements_filter_formats_and_memory(fake_plugins):
    fake_plugins("fakenarrow", "fakegood")
    selection = select("auto", _needs(WeightFormat.TQ1_0))
    assert selection.device.spec == "fakegood:0"
    reasons = {c.backend: c.reason for c in selection.report.candidates}
    assert reasons["fakenarrow"] == "lacks format tq1_0"
    with pytest.raises(BackendSelectionError, match="lacks format tq1_0"):
        select("fakenarrow", _needs(WeightFormat.TQ1_0))
    big = _needs(WeightFormat.I2_S, weight_bytes=3 << 30)  # fakes have 1 GiB
    assert select("auto", big).device.spec == "reference:0"
    with pytest.raises(BackendSelectionError, match="the weights need 3.00 GiB"):
        select("fakegood", big)


def test_emulated_devices_rank_below_native_ones(fake_plugins, monkeypatch):
    fake_plugins("fakeemu", "fakegood")
    selection = select("auto")
    assert selection.device.spec == "fakegood:0"  # despite fakeemu's priority 90 > 50
    monkeypatch.setenv("BITNET_PLUGINS", "fakeemu")
    assert select("auto").device.spec == "fakeemu:0"  # above the oracle by priority


def test_ranking_measures_the_models_shapes_and_caches_it(fake_plugins, monkeypatch):
    cache = fake_plugins("fakeemu")
    shapes = (LinearShape(WeightFormat.I2_S, 256, 512), LinearShape(WeightFormat.F16, 96, 256))
    first = select("auto", _needs(WeightFormat.I2_S, shapes=shapes))
    scores = {c.device: c.score for c in first.report.candidates}
    assert scores["fakeemu:0"] and scores["reference:0"]  # both measured
    assert list((cache / "bench").glob("*.json"))
    import bitnet.registry.bench as bench

    def no_measure(*args, **kwargs):
        raise AssertionError("measured again despite a cached score")

    monkeypatch.setattr(bench, "measure", no_measure)
    second = select("auto", _needs(WeightFormat.I2_S, shapes=shapes))
    assert {c.device: c.score for c in second.report.candidates} == scores


def test_bench_caps_the_work():
    from bitnet.backends.reference.descriptor import descriptor
    from bitnet.hal import CreateOptions
    from bitnet.registry.bench import MAX_ELEMENTS, MAX_SHAPES, bench_shapes

    backend = descriptor.create(descriptor.probe()[0], CreateOptions())
    shapes = [LinearShape(WeightFormat.I2_S, m, 2560) for m in (128256, 6912, 2560, 640, 128)]
    capped = bench_shapes(shapes, backend)
    assert len(capped) == MAX_SHAPES
    assert all(s.rows * s.cols <= MAX_ELEMENTS and s.cols == 2560 for s in capped)


class _Veto:
    def __init__(self, name: str):
        self.name = name
        self.seen = []

    @hooks.hookimpl
    def bitnet_rank_devices(self, candidates, requirements):
        return [c for c in candidates if c.backend != self.name]

    @hooks.hookimpl
    def bitnet_backend_selected(self, report):
        self.seen.append(report.chosen)


class _Broken:
    @hooks.hookimpl
    def bitnet_rank_devices(self, candidates, requirements):
        raise RuntimeError("policy service down")


@pytest.fixture
def hook(request):
    registered = []

    def add(obj):
        hooks.register(obj)
        registered.append(obj)
        return obj

    yield add
    for obj in registered:
        hooks.unregister(obj)


def test_rank_hook_can_veto_and_selected_hook_observes(fake_plugins, hook):
    fake_plugins("fakegood")
    veto = hook(_Veto("fakegood"))
    selection = select("auto")
    assert selection.device.spec == "reference:0"
    assert veto.seen == ["reference:0"]
    vetoed = [c for c in selection.report.candidates if c.backend == "fakegood"]
    assert vetoed[0].reason == "vetoed by a bitnet_rank_devices hook"


def test_a_raising_hook_is_reported_not_fatal(fake_plugins, hook, caplog):
    fake_plugins("fakegood")
    hook(_Broken())
    with caplog.at_level(logging.WARNING, logger="bitnet"):
        selection = select("auto")
    assert selection.device.spec == "fakegood:0"
    assert any("policy service down" in n for n in selection.report.notes)
    assert any("policy service down" in r.getMessage() for r in caplog.records)


def test_same_gpu_through_two_apis_is_linked(fake_plugins):
    fake_plugins("faketwina", "faketwinb")
    rows = _rows(validate=False)
    assert rows["faketwina"].same_device_as == ["faketwinb:0"]
    assert rows["faketwinb"].same_device_as == ["faketwina:0"]
    assert rows["reference"].same_device_as == []


def test_report_explains_every_candidate(fake_plugins):
    fake_plugins("fakegood", "fakewrong", "fakeabsent")
    report = select("auto").report
    text = report.text()
    for word in ("won", "lost", "failed", "unavailable", "fakegood:0", "reference:0"):
        assert word in text
    assert report.to_dict()["chosen"] == "fakegood:0"
