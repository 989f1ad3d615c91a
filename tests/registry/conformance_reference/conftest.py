"""The reference backend runs the conformance plugin too (against itself: API checks, and every
validation case must reproduce deterministically)."""

from __future__ import annotations

import pytest

from bitnet.testing.conformance import *  # noqa: F401,F403  (the plugin's hooks and fixture)


@pytest.fixture(scope="session")
def conformance_backend():
    from bitnet.backends.reference.descriptor import descriptor
    from bitnet.hal import CreateOptions

    backend = descriptor.create(descriptor.probe()[0], CreateOptions())
    yield backend
    backend.close()
