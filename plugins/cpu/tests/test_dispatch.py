"""Kernel-table dispatch: BITNET_CPU_FEATURES forces each path; nothing the CPU lacks runs."""

from __future__ import annotations

import pytest

from bitnet.hal import CreateOptions, cpu_features
from bitnet.hal.cpu_features import CpuFeatures

from conftest import real_flags
from bitnet_cpu.dispatch import variant_for

X86 = "x86_64"


def feats(arch: str, *flags: str) -> CpuFeatures:
    return CpuFeatures(arch=arch, model="test", flags=frozenset(flags), cores=2)


def test_variant_for_picks_the_best_present_path():
    avx512 = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
    assert variant_for(feats(X86, *avx512)) == "avx512"
    assert variant_for(feats(X86, *avx512[:-1])) == "avx2"  # AVX-512 without VNNI
    assert variant_for(feats(X86, "avx2", "fma")) == "generic"  # no F16C
    assert variant_for(feats(X86)) == "generic"
    assert variant_for(feats("aarch64", "neon", "dotprod")) == "neon"
    assert variant_for(feats("aarch64", "neon")) == "generic"
    assert variant_for(feats("aarch64", *avx512)) == "generic"  # x86 flags on Arm: ignored


CASES = [("none", "generic"), ("avx2,fma,f16c", "avx2"),
         ("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512_vnni", "avx512")]


@pytest.mark.parametrize("forced,expected", CASES, ids=[c[1] for c in CASES])
def test_forced_features_select_the_table(monkeypatch, forced, expected):
    if cpu_features.probe().arch not in ("x86_64", "amd64"):
        pytest.skip("x86 dispatch paths")
    from bitnet_cpu.dispatch import required_features
    from bitnet_cpu.descriptor import descriptor

    monkeypatch.setenv("BITNET_CPU_FEATURES", forced)
    cpu_features.probe.cache_clear()
    try:
        device = descriptor.probe()[0]
        assert f"({expected} kernels)" in device.isa
        missing = [f for f in required_features(expected) if f not in real_flags()]
        if missing:
            # must refuse, not crash with SIGILL
            with pytest.raises(RuntimeError, match="lacks"):
                descriptor.create(device, CreateOptions(threads=1))
            pytest.skip(f"this CPU lacks {', '.join(missing)}: refusal checked")
        backend = descriptor.create(device, CreateOptions(threads=1))
        assert backend.kernels.name == expected
        assert backend.info()["kernel"] == expected
    finally:
        monkeypatch.delenv("BITNET_CPU_FEATURES")
        cpu_features.probe.cache_clear()


def test_descriptor_is_cheap_and_fingerprinted():
    from bitnet_cpu.descriptor import descriptor, physical_cores

    assert descriptor.priority > 0
    assert len(descriptor.fingerprint()) == 16
    assert 1 <= physical_cores() <= cpu_features.probe().cores
