"""Conformance tests every backend package runs against itself: a pytest plugin.

Use it from the conftest.py of a backend's test directory::

    pytest_plugins = ["bitnet.testing.conformance"]   # top-level conftest (pytest's rule)
    # or, in a nested conftest:  from bitnet.testing.conformance import *  # noqa: F403

then either pass ``--bitnet-backend NAME`` (or ``NAME:INDEX``; env ``BITNET_CONFORMANCE_BACKEND``)
or override the ``conformance_backend`` fixture to return a created backend. The plugin adds, next
to that conftest, one test per check, each with its own id:

- ``test_api[...]``: capabilities and device are data of the right types, buffers round-trip
  exactly and are copies, the KV cache has its n_ctx, synchronize/info work;
- ``test_validation[<case id>]``: every case of ``bitnet.registry.validation`` against the
  reference backend (cases for ops or formats the backend does not claim are skipped as such);
- ``test_edge[<case id>]``: extra edge shapes: batch 64 on a real K, one output row, K = 1
  norms, multi-head attention without GQA, Falcon3's 12/4 heads of 256 on a prefill.

A conftest may opt into more checks with ``conformance_extras = ("ops", "model")``:

- ``ops::test_...``: every op against the reference on random (hypothesis) and edge inputs
  (``bitnet.testing.op_parity``; fixture ``reference_backend``, optional
  ``conformance_fp64_exact``);
- ``model::test_...``: whole tiny models through ``bitnet.load`` on the backend's device against
  the shared fixtures and the reference (``bitnet.testing.model_checks``; marked slow).

A backend that is unavailable on this machine (no driver, no device) is skipped with its reason.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bitnet.hal.backend import KernelBackend
from bitnet.hal.device import Capabilities, DeviceInfo
from bitnet.hal.weight_formats import FLOAT_FORMATS, TERNARY_FORMATS, WeightFormat
from bitnet.hal.ops import Op
from bitnet.registry import validation

ENV = "BITNET_CONFORMANCE_BACKEND"
__all__ = ["conformance_backend", "created_backend", "pytest_addoption", "pytest_collect_file",
           "reference_backend"]
EXTRAS = {"ops": "bitnet.testing.op_parity", "model": "bitnet.testing.model_checks"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bitnet conformance")
    group.addoption("--bitnet-backend", default=None, metavar="NAME[:INDEX]",
                    help=f"backend the conformance tests run on (env {ENV})")


def _named_backend(config: pytest.Config) -> str | None:
    try:
        value = config.getoption("--bitnet-backend")
    except ValueError:  # the option was not registered (plugin imported into a nested conftest)
        value = None
    return value or os.environ.get(ENV) or None


def created_backend(descriptor: object, index: int = 0,
                    options: object | None = None) -> Iterator[KernelBackend]:
    """Yield ``descriptor``'s backend on its device ``index``, closed afterwards; skip the test
    with the probe's reason where the backend is unavailable (no driver, no device). For the
    session fixtures of backend packages' conftests."""
    from bitnet.hal.descriptor import CreateOptions
    from bitnet.hal.device import Unavailable

    name = descriptor.name
    devices = descriptor.probe()
    if isinstance(devices, Unavailable):
        pytest.skip(f"{name} is unavailable here: {devices}")
    matching = [d for d in devices if d.index == index]
    if not matching:
        pytest.skip(f"{name} has no device {index} here")
    backend = descriptor.create(matching[0], options or CreateOptions())
    yield backend
    backend.close()


def _create(spec: str) -> Iterator[KernelBackend]:
    """Create backend ``spec`` through its entry point, whatever the env allow lists say."""
    from bitnet.hal.device_spec import parse_device_spec
    from bitnet.registry.discovery import _entry_points

    request = parse_device_spec(spec).requests[0]
    eps = {ep.name.lower(): ep for ep in _entry_points()}
    if request.backend not in eps:
        pytest.fail(f"no installed backend named {request.backend!r} (found: {sorted(eps)})")
    descriptor = eps[request.backend].load()
    descriptor = descriptor() if isinstance(descriptor, type) else descriptor
    yield from created_backend(descriptor, request.index or 0)


@pytest.fixture(scope="session")
def conformance_backend(request: pytest.FixtureRequest) -> Iterator[KernelBackend]:
    """The backend under test; override this fixture or pass --bitnet-backend."""
    spec = _named_backend(request.config)
    if spec is None:
        pytest.skip(f"no backend to check: pass --bitnet-backend NAME, set {ENV}, or override "
                    f"the conformance_backend fixture")
    yield from _create(spec)


@pytest.fixture(scope="session")
def reference_backend() -> Iterator[KernelBackend]:
    """The numpy oracle the checks compare against."""
    from bitnet.backends.reference.descriptor import descriptor
    from bitnet.hal.descriptor import CreateOptions

    backend = descriptor.create(descriptor.probe()[0], CreateOptions())
    yield backend
    backend.close()


# ---------------------------------------------------------------------------------------------
# the checks


def _check_capabilities(backend: KernelBackend) -> None:
    caps = backend.capabilities
    assert isinstance(caps, Capabilities), f"capabilities is {type(caps).__name__}"
    assert caps.ops and all(isinstance(o, Op) for o in caps.ops), caps.ops
    assert caps.ternary_formats <= TERNARY_FORMATS, caps.ternary_formats
    assert caps.float_formats <= FLOAT_FORMATS, caps.float_formats
    for op in caps.ops:
        assert callable(getattr(backend, op.value, None)), f"claims {op.value} but has no method"


def _check_device(backend: KernelBackend) -> None:
    device = backend.device
    assert isinstance(device, DeviceInfo), f"device is {type(device).__name__}"
    assert backend.name == device.backend, (backend.name, device.backend)
    assert device.index >= 0 and device.name


def _check_buffers(backend: KernelBackend) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 37)).astype(np.float32)  # [n, K], an odd width
    ids = np.array([5, 0, 7], dtype=np.int32)
    buf = backend.upload(x)
    id_buf = backend.upload(ids)
    assert tuple(buf.shape) == x.shape and tuple(id_buf.shape) == ids.shape
    x_copy = x.copy()
    x[:] = 0.0  # the device copy must not alias the host array
    back = backend.download(buf)
    assert back.dtype == np.float32 and np.array_equal(back, x_copy)
    back[:] = 1.0  # nor must the downloaded array alias the buffer
    assert np.array_equal(backend.download(buf), x_copy)
    assert np.array_equal(backend.download(id_buf), ids)
    assert backend.download(id_buf).dtype == np.int32


def _check_kv_cache(backend: KernelBackend) -> None:
    if Op.ATTENTION not in backend.capabilities.ops:
        pytest.skip("attention not claimed")
    cache = backend.kv_cache_alloc(2, 16, 2, 64)
    assert cache.n_ctx == 16


def _check_misc(backend: KernelBackend) -> None:
    backend.synchronize()
    assert isinstance(backend.info(), dict)


API_CHECKS: dict[str, Callable[[KernelBackend], None]] = {
    "capabilities": _check_capabilities,
    "device": _check_device,
    "buffers": _check_buffers,
    "kv_cache": _check_kv_cache,
    "synchronize_info": _check_misc,
}


def _edge_cases() -> list[validation.Case]:
    lt = {Op.LINEAR_TERNARY}
    cases = []
    for i, fmt in enumerate((WeightFormat.I2_S, WeightFormat.TQ2_0, WeightFormat.TQ1_0)):
        cases.append(validation.make_case("linear_ternary", validation.LINEAR_TERNARY_TOL, lt,
                                          fmt, None, 1000 + i, fmt=fmt, n=64, k=2560, m=3))
        cases.append(validation.make_case("linear_ternary", validation.LINEAR_TERNARY_TOL, lt,
                                          fmt, None, 1010 + i, fmt=fmt, n=5, k=6912, m=1))
    cases.append(validation.make_case("rmsnorm", validation.FLOAT_TOL, {Op.RMSNORM}, seed=1020,
                                      n=2, k=1))
    cases.append(validation.make_case("attention", validation.ATTENTION_TOL, {Op.ATTENTION},
                                      seed=1021, n=2, h=2, kv=2, d=128, pos=0))
    # Falcon3-7B's real heads (12 query / 4 KV of 256) on a prefill, and their RoPE
    cases.append(validation.make_case("attention", validation.ATTENTION_TOL, {Op.ATTENTION},
                                      seed=1023, n=24, h=12, kv=4, d=256, pos=5))
    cases.append(validation.make_case("rope", validation.FLOAT_TOL, {Op.ROPE}, seed=1024,
                                      n=24, h=12, d=256, pos=5, theta=1000042.0))
    cases.append(validation.make_case("add", validation.EXACT, {Op.ADD}, seed=1022, n=64, k=1))
    return cases


def _run_case(case: validation.Case, backend: KernelBackend) -> None:
    if not case.applies_to(backend.capabilities):
        pytest.skip(f"{case.op} / its formats are not claimed by this backend")
    result = validation.check_case(case, backend, validation.expected_output(case))
    assert result.passed, result.line()


# ---------------------------------------------------------------------------------------------
# collection: the tests live next to the conftest that enabled this plugin


def _test_fn(check: Callable[[KernelBackend], None]) -> Callable[..., None]:
    def test(conformance_backend: KernelBackend) -> None:
        check(conformance_backend)

    test.__doc__ = check.__doc__
    return test


class ExtraChecks(pytest.Module):
    """One of the EXTRAS modules, collected as a pytest module below the enabling conftest.py
    (so that conftest's fixtures, conformance_backend first, reach its tests)."""

    module_name: str

    def _getobj(self) -> object:
        return importlib.import_module(self.module_name)


def _extras(conftest: Path, config: pytest.Config) -> tuple[str, ...]:
    """The ``conformance_extras`` the conftest.py at ``conftest`` asks for (checked names)."""
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__) == conftest:
            extras = tuple(getattr(plugin, "conformance_extras", ()))
            unknown = sorted(set(extras) - set(EXTRAS))
            if unknown:
                raise pytest.UsageError(f"{conftest}: conformance_extras has {unknown}; "
                                        f"known: {sorted(EXTRAS)}")
            return extras
    return ()


class ConformanceFile(pytest.File):
    """The conformance tests, collected as if they were written in the enabling conftest.py."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        for name, check in API_CHECKS.items():
            yield pytest.Function.from_parent(self, name=f"test_api[{name}]",
                                              callobj=_test_fn(check))
        for group, cases in (("test_validation", validation.all_cases()),
                             ("test_edge", _edge_cases())):
            for case in cases:
                def check(backend: KernelBackend, case: validation.Case = case) -> None:
                    _run_case(case, backend)

                yield pytest.Function.from_parent(self, name=f"{group}[{case.id}]",
                                                  callobj=_test_fn(check))
        for extra in _extras(self.path, self.config):
            module = ExtraChecks.from_parent(self, path=self.path, name=extra,
                                             nodeid=f"{self.nodeid}::{extra}")
            module.module_name = EXTRAS[extra]
            yield module


_COLLECTED: set[tuple[int, Path]] = set()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect the conformance tests once for each conftest.py that enables this plugin."""
    if file_path.name != "conftest.py":
        return None
    key = (id(parent.session), file_path)
    if key in _COLLECTED:
        return None
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError:
        return None
    if "bitnet.testing.conformance" not in text:
        return None
    _COLLECTED.add(key)
    return ConformanceFile.from_parent(parent, path=file_path)
