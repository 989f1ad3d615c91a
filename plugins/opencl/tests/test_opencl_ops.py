"""What the OpenCL backend claims. The ops themselves are checked against the numpy reference by
the conformance suite's op checks (bitnet.testing.op_checks, enabled in conftest.py)."""

from __future__ import annotations

from bitnet.hal import ALL_OPS, FLOAT_FORMATS, TERNARY_FORMATS


def test_capabilities_claim_the_whole_contract(opencl_backend):
    caps = opencl_backend.capabilities
    assert caps.ops == ALL_OPS
    assert caps.ternary_formats == TERNARY_FORMATS
    assert caps.float_formats == FLOAT_FORMATS
