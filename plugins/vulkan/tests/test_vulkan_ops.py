"""What only the Vulkan backend has: its claims, work-group folding into z, the binding-range
limit, and both integer-dot shader paths. The ops themselves are checked against the numpy
reference by the conformance suite's op checks (bitnet.testing.op_parity, enabled in
conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.formats.floats import quantize_rows
from bitnet.hal import (
    ALL_OPS,
    FLOAT_FORMATS,
    TERNARY_FORMATS,
    WeightFormat,
    WeightTensor,
)
from bitnet.testing.weights import q6_k_tensor, ternary_tensor


def test_capabilities_claim_the_whole_contract(vulkan_backend):
    caps = vulkan_backend.capabilities
    assert caps.ops == ALL_OPS
    assert caps.ternary_formats == TERNARY_FORMATS
    assert caps.float_formats == FLOAT_FORMATS


def test_many_rows_fold_into_z(vulkan_backend, reference_backend, monkeypatch):
    """Groups beyond maxComputeWorkGroupCount[0] fold into z; pretend the limit is 3."""
    monkeypatch.setattr(vulkan_backend.runtime, "max_groups", 3)
    rng = np.random.default_rng(5)
    values = rng.integers(-1, 2, (203, 256)).astype(np.int8)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    for fmt in (WeightFormat.I2_S, WeightFormat.TQ2_0):
        tensor = ternary_tensor(fmt, values, rng)
        got = vulkan_backend.download(vulkan_backend.linear_ternary(
            vulkan_backend.load_weight(tensor), vulkan_backend.upload(x)))
        want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
        np.testing.assert_array_equal(got, want)
    tensor = q6_k_tensor(203, 256, rng)
    got = vulkan_backend.download(vulkan_backend.linear_float(
        vulkan_backend.load_weight(tensor), vulkan_backend.upload(x)))
    want = reference_backend.linear_float(reference_backend.load_weight(tensor), x)
    np.testing.assert_array_equal(got, want)


def test_buffers_beyond_the_binding_limit_are_refused(vulkan_backend, monkeypatch):
    monkeypatch.setattr(vulkan_backend.runtime, "max_buffer_range", 1024)
    data = quantize_rows(WeightFormat.F32, np.zeros((4, 512), np.float32))
    with pytest.raises(MemoryError, match="maxStorageBufferRange"):
        vulkan_backend.load_weight(WeightTensor("big", WeightFormat.F32, 4, 512, data))


@pytest.mark.parametrize("int_dot", ["0", "1"])
def test_both_integer_dot_paths_are_bit_exact(reference_backend, monkeypatch, int_dot):
    """The OpSDot shaders (where the device has VK_KHR_shader_integer_dot_product) and the
    portable ones (BITNET_VULKAN_INT_DOT=0) give the reference's bits."""
    from bitnet_vulkan.descriptor import descriptor

    from bitnet.hal import CreateOptions

    monkeypatch.setenv("BITNET_VULKAN_INT_DOT", int_dot)
    backend = descriptor.create(descriptor.probe()[0], CreateOptions())
    try:
        if int_dot == "1" and not backend.info()["int_dot"]:
            pytest.skip("this device has no VK_KHR_shader_integer_dot_product")
        assert backend.info()["int_dot"] == (int_dot == "1")
        rng = np.random.default_rng(17)
        values = rng.integers(-1, 2, (21, 512)).astype(np.int8)
        x = (rng.standard_normal((9, 512)) * 2).astype(np.float32)
        for fmt in sorted(TERNARY_FORMATS):
            tensor = ternary_tensor(fmt, values, rng)
            got = backend.download(backend.linear_ternary(backend.load_weight(tensor),
                                                          backend.upload(x)))
            want = reference_backend.linear_ternary(reference_backend.load_weight(tensor), x)
            np.testing.assert_array_equal(got, want)
        tensor = q6_k_tensor(21, 512, rng)  # the Q6_K head's integer dot takes the same path
        got = backend.download(backend.linear_float(backend.load_weight(tensor),
                                                    backend.upload(x)))
        want = reference_backend.linear_float(reference_backend.load_weight(tensor), x)
        np.testing.assert_array_equal(got, want)
    finally:
        backend.close()


def test_a_replayed_step_equals_the_eager_step_bit_for_bit(vulkan_backend):
    """Ops captured once into a command buffer, replayed with new inputs written into the same
    input buffer: the eager results bit for bit, in one host submission a step (the input
    write, the replay and the download go together)."""
    b = vulkan_backend
    rng = np.random.default_rng(3)
    values = rng.integers(-1, 2, (64, 256)).astype(np.int8)
    w = b.load_weight(ternary_tensor(WeightFormat.I2_S, values, rng))
    norm = b.upload(rng.standard_normal((1, 256)).astype(np.float32))

    def step(x):
        y = b.linear_ternary(w, b.rmsnorm(x, norm, 1e-5))  # [1, 64]
        return b.add(b.silu_mul(y, y), y)

    x = b.upload(np.zeros((1, 256), np.float32))
    with b.recording() as recorded:
        out = step(x)
    assert recorded is not None
    for _ in range(3):
        x_host = rng.standard_normal((1, 256)).astype(np.float32)
        eager = b.download(step(b.upload(x_host)))
        before = b.submission_count()
        b.write(x, x_host)
        recorded.replay(0)
        got = b.download(out)
        assert b.submission_count() - before == 1
        np.testing.assert_array_equal(got, eager)


def test_a_replayed_decode_step_is_one_submission():
    """The Transformer's decode step replayed (bitnet.core.replay; that it equals the eager
    step is bitnet.testing.model_checks'): the id and position writes, the replay and the
    logits download go in one submission."""
    import bitnet
    from bitnet.core.generate import decode_one, prefill

    with bitnet.load(device="vulkan") as model:
        t = model.transformer
        prefill(t, [1, 40, 41])
        decode_one(t, 7, 3)  # recorded, then replayed
        before = model.backend.submission_count()
        for pos in range(4, 8):
            decode_one(t, 7, pos)
        assert (model.backend.submission_count() - before) / 4 <= 1
        assert t.replay.replayed == 5
