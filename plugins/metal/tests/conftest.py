"""bitnet-metal tests (Linux CI: the plugin is unavailable and must say why). The conformance
suite is wired to the real backend and skips with the probe's reason off a Mac (and on a Mac
unless BITNET_METAL_DEV=1)."""

import pytest

from bitnet.hal import CreateOptions, Unavailable
from bitnet.testing.conformance import pytest_collect_file  # noqa: F401  (adds the suite)


@pytest.fixture(scope="session")
def conformance_backend():
    from bitnet_metal.descriptor import descriptor

    devices = descriptor.probe()
    if isinstance(devices, Unavailable):
        pytest.skip(f"metal is unavailable here: {devices}")
    backend = descriptor.create(devices[0], CreateOptions())
    yield backend
    backend.close()
