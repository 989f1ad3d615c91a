"""Fake descriptors: good, unavailable, raising in probe, future API, wrong numbers, crashing."""

from __future__ import annotations

import os

import numpy as np

from bitnet.hal import BackendDescriptor, CreateOptions, DeviceInfo, DeviceKind, Unavailable


def _reference_subclass(name: str, **overrides):
    from bitnet.backends.reference.backend import ReferenceBackend

    return type(f"{name.title()}Backend", (ReferenceBackend,), {"name": name, **overrides})


class FakeDescriptor(BackendDescriptor):
    """A working backend (the reference's numpy code under another name), ranked above it."""

    name = "fakegood"
    version = "0.0.1"
    api_version = (3, 3)
    kind = DeviceKind.CPU
    priority = 50
    distribution = "bitnet-fakes"
    overrides: dict = {}
    device_kwargs: dict = {}

    def probe(self):
        return [DeviceInfo(self.name, 0, f"fake {self.name} device", DeviceKind.CPU,
                           memory_total=1 << 30, **self.device_kwargs)]

    def create(self, device: DeviceInfo, options: CreateOptions):
        backend = _reference_subclass(self.name, **self.overrides)(device)
        backend.name = self.name
        return backend


class UnavailableDescriptor(FakeDescriptor):
    name = "fakeabsent"

    def probe(self):
        return Unavailable("no fake accelerator found", "plug in the fake accelerator")


class ProbeRaisesDescriptor(FakeDescriptor):
    name = "fakeprobe"

    def probe(self):
        raise RuntimeError("fake driver exploded during enumeration")


class FutureApiDescriptor(FakeDescriptor):
    """Speaks an API version core does not: must be refused before ``probe`` imports anything."""

    name = "fakefuture"
    api_version = (99, 99)

    def probe(self):
        import bitnet_fakes.heavy  # noqa: F401  (the heavy import the API check must prevent)

        return super().probe()


def _wrong_linear_ternary(self, w, x):
    from bitnet.backends.reference.backend import ReferenceBackend

    y = ReferenceBackend.linear_ternary(self, w, x)
    return (y * np.float32(1.01)).astype(np.float32)  # 1 % off: a kernel bug


class WrongNumbersDescriptor(FakeDescriptor):
    name = "fakewrong"
    overrides = {"linear_ternary": _wrong_linear_ternary}


def _crash_rmsnorm(self, x, weight, eps):
    os._exit(86)  # what a segfaulting driver looks like from Python: the process is gone


class CrashDescriptor(FakeDescriptor):
    name = "fakecrash"
    overrides = {"rmsnorm": _crash_rmsnorm}


class ClassEntryDescriptor(FakeDescriptor):
    """Its entry point names the class: core must instantiate it."""

    name = "fakeclass"


def _narrow_init(self, device):
    from bitnet.backends.reference.backend import ReferenceBackend
    from bitnet.hal import Capabilities, WeightFormat

    ReferenceBackend.__init__(self, device)
    caps = self.capabilities
    self.capabilities = Capabilities(caps.ops, frozenset({WeightFormat.I2_S}), caps.float_formats)


class NarrowDescriptor(FakeDescriptor):
    """Claims only I2_S among the ternary formats."""

    name = "fakenarrow"
    overrides = {"__init__": _narrow_init}


class EmulatedDescriptor(FakeDescriptor):
    """A CPU pretending to be a GPU (like PoCL or lavapipe), with a high static priority."""

    name = "fakeemu"
    priority = 90
    device_kwargs = {"emulated": True}


class TwinADescriptor(FakeDescriptor):
    name = "faketwina"
    device_kwargs = {"stable_id": "pci:0000:65:00.0"}


class TwinBDescriptor(FakeDescriptor):
    name = "faketwinb"
    device_kwargs = {"stable_id": "pci:0000:65:00.0"}


class NotADescriptor:
    name = "fakenotdesc"


fakegood = FakeDescriptor()
fakeabsent = UnavailableDescriptor()
fakeprobe = ProbeRaisesDescriptor()
fakefuture = FutureApiDescriptor()
fakewrong = WrongNumbersDescriptor()
fakecrash = CrashDescriptor()
fakenarrow = NarrowDescriptor()
fakeemu = EmulatedDescriptor()
faketwina = TwinADescriptor()
faketwinb = TwinBDescriptor()
