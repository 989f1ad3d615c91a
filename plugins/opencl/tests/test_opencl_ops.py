"""What the OpenCL backend claims. The ops themselves are checked against the numpy reference by
the conformance suite's op checks (bitnet.testing.op_checks, enabled in conftest.py)."""

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


def test_replayed_decode_steps_equal_eager_steps_bit_for_bit():
    """The Transformer's decode step recorded once as a prepared enqueue list (arguments set
    once) and replayed (bitnet.core.replay): the same logits as eager steps, bit for bit."""
    import numpy as np

    import bitnet
    from bitnet.core.generate import decode_one, prefill

    with bitnet.load(device="opencl") as model:
        t = model.transformer
        prompt = [1, 40, 41, 42]

        def run(replay: bool) -> list:
            t.replay.enabled = replay
            t.replay.steps.clear()
            t.cache = t.new_cache()
            logits = [prefill(t, prompt)[0]]
            for pos in range(len(prompt), len(prompt) + 5):
                logits.append(decode_one(t, int(np.argmax(logits[-1])), pos))
            return logits

        eager = run(False)
        replayed = run(True)
        assert t.replay.replayed == 5
        for want, got in zip(eager, replayed):
            np.testing.assert_array_equal(got, want)
