"""What the OpenCL backend claims. The ops themselves are checked against the numpy reference by
the conformance suite's op checks (bitnet.testing.op_parity, enabled in conftest.py)."""

from __future__ import annotations

from bitnet.hal import ALL_OPS, FLOAT_FORMATS, TERNARY_FORMATS


def test_capabilities_claim_the_whole_contract(opencl_backend):
    caps = opencl_backend.capabilities
    assert caps.ops == ALL_OPS
    assert caps.ternary_formats == TERNARY_FORMATS
    assert caps.float_formats == FLOAT_FORMATS


def test_kernels_take_the_kernel_table_order(opencl_backend):
    """Each kernel declares as many __global buffers and scalars as its KERNELS entry (the
    runtime binds them in declaration order): one argument order for every API."""
    import pyopencl as cl

    from bitnet.hal.device_runtime import KERNELS, KernelSpec

    runtime = opencl_backend.runtime
    for name, sig in KERNELS.items():
        fmt = "f16" if name in ("embed", "linear_float") else ""
        kernel = runtime.kernel(KernelSpec(name, fmt=fmt))
        quals = kernel.qualifiers
        glob = cl.kernel_arg_address_qualifier.GLOBAL
        local = cl.kernel_arg_address_qualifier.LOCAL
        assert sum(q == glob for q in quals) == len(sig.buffers), name
        assert sum(q not in (glob, local) for q in quals) == len(sig.scalars), name

