"""The numpy reference backend: every op against a case small enough to work out by hand, and the
whole forward pass against bitnet.cpp's logits on the fixture models."""

from __future__ import annotations

import json
import math
import warnings
from importlib.metadata import entry_points

import numpy as np
import pytest

from bitnet.backends.reference.backend import ReferenceBackend
from bitnet.backends.reference.descriptor import ReferenceDescriptor, descriptor
from bitnet.formats.floats import dequantize_rows, quantize_rows
from bitnet.formats.ternary import i2s_pack, tq1_pack, tq2_pack
from bitnet.hal import (
    ALL_OPS,
    FLOAT_FORMATS,
    TERNARY_FORMATS,
    CreateOptions,
    DeviceKind,
    WeightFormat,
    WeightTensor,
)
from bitnet.testing.fixtures import FIXTURES as SHARED_FIXTURES

f32 = np.float32
FIXTURES = SHARED_FIXTURES


@pytest.fixture(scope="module")
def backend() -> ReferenceBackend:
    return descriptor.create(descriptor.probe()[0], CreateOptions(threads=3))


def ternary_tensor(fmt: WeightFormat, values: np.ndarray, scales, out_scale: float = 1.0):
    rows, cols = values.shape
    if fmt is WeightFormat.I2_S:
        data = i2s_pack(values, scales)
    else:
        pack = tq2_pack if fmt is WeightFormat.TQ2_0 else tq1_pack
        data = pack(values, np.asarray(scales, np.float32).reshape(rows, -1))
    return WeightTensor("w", fmt, rows, cols, data, out_scale)


def float_tensor(fmt: WeightFormat, w: np.ndarray) -> WeightTensor:
    return WeightTensor("w", fmt, w.shape[0], w.shape[1], quantize_rows(fmt, w))


def five_level_row(k: int) -> np.ndarray:
    """x[k] = (k % 5 - 2) / 2: -1, -0.5, 0, 0.5, 1, ... ; both quantizers map it to
    q = -127, -64, 0, 64, 127 (127 * 0.5 = 63.5 rounds half to even)."""
    return ((np.arange(k) % 5 - 2) / 2).astype(np.float32).reshape(1, k)


# -- descriptor ---------------------------------------------------------------------------------


def test_descriptor_is_registered_and_always_available():
    found = {ep.name: ep for ep in entry_points(group="bitnet.backends")}
    assert found["reference"].value == "bitnet.backends.reference.descriptor:descriptor"
    assert isinstance(found["reference"].load(), ReferenceDescriptor)
    assert descriptor.name == "reference"
    assert descriptor.priority == 0
    assert descriptor.kind is DeviceKind.CPU
    assert descriptor.api_version == (3, 3)
    (device,) = descriptor.probe()
    assert device.name == "numpy reference (host CPU)"
    assert device.spec == "reference:0" and device.kind is DeviceKind.CPU
    fingerprint = descriptor.fingerprint()
    assert len(fingerprint) == 16 and fingerprint == descriptor.fingerprint()


def test_capabilities_cover_everything(backend):
    caps = backend.capabilities
    assert caps.ops == ALL_OPS
    assert caps.ternary_formats == TERNARY_FORMATS
    assert caps.float_formats == FLOAT_FORMATS
    assert backend.name == "reference"


# -- buffers and weights ------------------------------------------------------------------------


def test_upload_and_download_copy(backend):
    host = np.ones((2, 3), np.float32)
    buf = backend.upload(host)
    host[:] = 7
    out = backend.download(buf)
    assert out.tolist() == [[1, 1, 1], [1, 1, 1]]
    out[:] = 5
    assert backend.download(buf)[0, 0] == 1
    assert backend.upload(np.arange(3, dtype=np.int32)).dtype == np.int32
    with pytest.raises(ValueError, match="float32 or int32"):
        backend.upload(np.ones(3))


def test_load_weight_keeps_no_view_of_the_file(backend):
    tensor = ternary_tensor(WeightFormat.I2_S, np.ones((2, 128), np.int8), 0.5)
    weight = backend.load_weight(tensor)
    assert (weight.format, weight.rows, weight.cols) == (WeightFormat.I2_S, 2, 128)
    assert not np.shares_memory(weight.values, tensor.data)
    f32_tensor = float_tensor(WeightFormat.F32, np.ones((2, 4), np.float32))
    table = backend.load_weight(f32_tensor)
    assert not np.shares_memory(table.matrix, f32_tensor.data)


def test_load_weight_refuses_k_beyond_exact_float32_sums(backend):
    k = 2**24 // 128  # 128 * K would reach 2**24: float32 could round an integer sum
    tensor = WeightTensor("huge", WeightFormat.I2_S, 1, k, np.zeros(k // 4 + 32, np.uint8))
    with pytest.raises(ValueError, match="K=131072"):
        backend.load_weight(tensor)


def test_kv_cache_is_float16(backend):
    cache = backend.kv_cache_alloc(n_layers=3, n_ctx=8, n_kv_heads=2, head_dim=4)
    assert cache.n_ctx == 8
    assert cache.k.shape == cache.v.shape == (3, 8, 8)
    assert cache.k.dtype == cache.v.dtype == np.float16


# -- linear_ternary -----------------------------------------------------------------------------


def test_i2s_linear_1x256_by_hand(backend):
    x = five_level_row(256)  # max|x| = 1: s = 127, q = -127, -64, 0, 64, 127, ...
    values = np.stack([np.ones(256), np.zeros(256), np.sign(x[0])]).astype(np.int8)
    w = backend.load_weight(ternary_tensor(WeightFormat.I2_S, values, 0.5))
    y = backend.download(backend.linear_ternary(w, backend.upload(x)))
    # row 0: 51 whole cycles sum to 0, element 255 is -127; row 2: sum |q| = 51 * 382 + 127
    expected = [
        (f32(-127) / f32(127)) * f32(0.5),
        f32(0),
        (f32(19609) / f32(127)) * f32(0.5),
    ]
    assert y.dtype == np.float32 and y.shape == (1, 3)
    assert y[0].tolist() == expected


def test_i2s_linear_quantizes_each_token_alone(backend):
    rng = np.random.default_rng(5)
    values = rng.integers(-1, 2, (4, 256)).astype(np.int8)
    w = backend.load_weight(ternary_tensor(WeightFormat.I2_S, values, 0.25, out_scale=2.0))
    x = np.concatenate([five_level_row(256), 3 * five_level_row(256)])  # same codes, s / 3
    both = backend.linear_ternary(w, x)
    np.testing.assert_array_equal(both[1:], backend.linear_ternary(w, x[1:]))
    np.testing.assert_allclose(both[1], 3 * both[0], rtol=1e-6)
    no_out_scale = backend.load_weight(ternary_tensor(WeightFormat.I2_S, values, 0.25))
    np.testing.assert_array_equal(both, backend.linear_ternary(no_out_scale, x) * f32(2))


@pytest.mark.parametrize("fmt", [WeightFormat.TQ2_0, WeightFormat.TQ1_0])
def test_tq_linear_two_blocks_by_hand(backend, fmt):
    x = np.concatenate([five_level_row(256), 2 * five_level_row(256)], axis=1)  # [1, 512]
    sign = np.sign(x[0]).astype(np.int8)
    values = np.stack([sign, np.ones(512, np.int8)])
    d_w = np.array([[0.5, 0.25], [1.0, 2.0]], np.float32)
    w = backend.load_weight(ternary_tensor(fmt, values, d_w))
    y = backend.download(backend.linear_ternary(w, x))
    # Q8_K: block 0 amax = -1 (first of the largest): d_y = 1/127; block 1 amax = -2:
    # d_y = 1/63.5; both blocks quantize to the same q as five_level_row
    d_y = [f32(1) / (f32(-127) / f32(-1)), f32(1) / (f32(-127) / f32(-2))]
    sums = {0: [19609, 19609], 1: [-127, -127]}  # sum |q| per block; sum q per block
    for row in (0, 1):
        acc = f32(0)
        for b in (0, 1):
            acc = f32(acc + f32(sums[row][b]) * (d_w[row, b] * d_y[b]))
        assert y[0, row] == acc


def test_tq1_and_tq2_agree(backend):
    rng = np.random.default_rng(9)
    values = rng.integers(-1, 2, (6, 512)).astype(np.int8)
    d = rng.uniform(0.1, 1, (6, 2)).astype(np.float16).astype(np.float32)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    tq1 = backend.load_weight(ternary_tensor(WeightFormat.TQ1_0, values, d))
    tq2 = backend.load_weight(ternary_tensor(WeightFormat.TQ2_0, values, d))
    np.testing.assert_array_equal(backend.linear_ternary(tq1, x), backend.linear_ternary(tq2, x))


def test_linear_ops_reject_the_wrong_weight_or_width(backend):
    ones = np.ones((1, 128), np.int8)
    ternary = backend.load_weight(ternary_tensor(WeightFormat.I2_S, ones, 1.0))
    floats = backend.load_weight(float_tensor(WeightFormat.F16, np.ones((1, 128), np.float32)))
    x = np.ones((1, 128), np.float32)
    with pytest.raises(TypeError, match="not a float format"):
        backend.linear_float(ternary, x)
    with pytest.raises(TypeError, match="not ternary"):
        backend.linear_ternary(floats, x)
    with pytest.raises(ValueError, match="K=128"):
        backend.linear_ternary(ternary, np.ones((1, 256), np.float32))


# -- linear_float and embed ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(FLOAT_FORMATS - {WeightFormat.Q6_K}, key=lambda f: f.value))
def test_linear_float_is_the_decoded_matrix(backend, fmt):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 256)).astype(np.float32)
    tensor = float_tensor(fmt, w)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    y = backend.linear_float(backend.load_weight(tensor), x)
    decoded = dequantize_rows(fmt, tensor.data, 3, 256)
    np.testing.assert_allclose(y, x @ decoded.T, rtol=1e-5, atol=1e-5)
    assert y.dtype == np.float32


def test_linear_float_q6_k_is_q8_k_activations_times_the_decoded_matrix(backend):
    """Q6_K runs as llama.cpp does: x rounded to Q8_K, then an exact integer dot per block;
    mathematically that is dequant(q8_k(x)) @ dequant(w), up to f32 rounding of the sum."""
    from bitnet.formats.activations import quantize_q8_k

    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 512)).astype(np.float32)
    tensor = float_tensor(WeightFormat.Q6_K, w)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    y = backend.linear_float(backend.load_weight(tensor), x)
    q, d = quantize_q8_k(x)
    x_hat = (q.reshape(3, 2, 256).astype(np.float64) * d[:, :, None]).reshape(3, 512)
    decoded = dequantize_rows(WeightFormat.Q6_K, tensor.data, 5, 512).astype(np.float64)
    np.testing.assert_allclose(y, x_hat @ decoded.T, rtol=1e-5, atol=1e-5)
    # and it is not the f32-activation product: the Q8_K rounding is visible
    assert np.abs(y - x @ decoded.T.astype(np.float32)).max() > 1e-6


def test_linear_float_q6_k_with_lossless_activations_is_exact(backend):
    """Activations already on the Q8_K grid (integers up to 127 per block) lose nothing."""
    rng = np.random.default_rng(4)
    tensor = float_tensor(WeightFormat.Q6_K, rng.standard_normal((2, 256)).astype(np.float32))
    x = rng.integers(-126, 127, (1, 256)).astype(np.float32)
    x[0, 7] = -127.0  # the block's absmax: iscale = 1, so q == x exactly
    y = backend.linear_float(backend.load_weight(tensor), x)
    decoded = dequantize_rows(WeightFormat.Q6_K, tensor.data, 2, 256).astype(np.float64)
    np.testing.assert_allclose(y, x.astype(np.float64) @ decoded.T, rtol=1e-6)


def test_linear_float_by_hand(backend):
    w = np.array([[1, 2], [0.5, -1], [0, 0]], np.float32)
    weight = backend.load_weight(float_tensor(WeightFormat.F16, w))
    y = backend.linear_float(weight, np.array([[2, 3]], np.float32))
    assert y.tolist() == [[8, -2, 0]]


def test_embed_rows(backend):
    table = np.arange(20, dtype=np.float32).reshape(5, 4) / 4
    weight = backend.load_weight(float_tensor(WeightFormat.F16, table))
    rows = backend.embed(weight, backend.upload(np.array([3, 0, 3], np.int32)))
    np.testing.assert_array_equal(rows, table[[3, 0, 3]])
    q6 = float_tensor(WeightFormat.Q6_K, np.random.default_rng(1).standard_normal((4, 256)))
    decoded = dequantize_rows(WeightFormat.Q6_K, q6.data, 4, 256)
    rows = backend.embed(backend.load_weight(q6), np.array([2], np.int32))
    np.testing.assert_array_equal(rows, decoded[[2]])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        backend.embed(weight, np.array([-1], np.int32))


# -- rmsnorm, rope ------------------------------------------------------------------------------


def test_rmsnorm_by_hand(backend):
    x = np.array([[3, 4], [0, 0]], np.float32)
    y = backend.rmsnorm(x, np.array([[1, 2]], np.float32), 1e-5)
    scale = 1 / math.sqrt(12.5 + 1e-5)  # mean(9, 16) = 12.5
    np.testing.assert_allclose(y[0], [3 * scale, 8 * scale], rtol=1e-7)
    assert y[1].tolist() == [0, 0] and y.dtype == np.float32


def test_rope_at_position_0_is_identity(backend):
    x = np.random.default_rng(0).standard_normal((1, 3 * 8)).astype(np.float32)
    np.testing.assert_array_equal(backend.rope(x, 0, n_heads=3, head_dim=8, theta=10000.0), x)


def test_rope_by_hand(backend):
    x = np.array([[1, 2, 3, 4]], np.float32)  # one head of 4: pairs (1, 3) and (2, 4)
    y = backend.rope(x, 2, n_heads=1, head_dim=4, theta=10000.0)[0]
    a0, a1 = 2.0, 2.0 * 10000.0**-0.5  # angles p * theta**(-2i/D)
    expected = [
        1 * math.cos(a0) - 3 * math.sin(a0),
        2 * math.cos(a1) - 4 * math.sin(a1),
        1 * math.sin(a0) + 3 * math.cos(a0),
        2 * math.sin(a1) + 4 * math.cos(a1),
    ]
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_rope_scores_depend_on_relative_position(backend):
    rng = np.random.default_rng(4)
    q = rng.standard_normal((1, 16)).astype(np.float32)
    k = rng.standard_normal((1, 16)).astype(np.float32)

    def score(pq: int, pk: int) -> float:
        rq = backend.rope(q, pq, 1, 16, 500000.0)
        rk = backend.rope(k, pk, 1, 16, 500000.0)
        return float(rq[0] @ rk[0])

    assert score(5, 3) == pytest.approx(score(12, 10), rel=1e-5)
    assert score(5, 3) != pytest.approx(score(5, 4), rel=1e-3)


# -- attention ----------------------------------------------------------------------------------


def two_token_case():
    q = np.array([[1, 0], [0, 1]], np.float32)
    k = np.array([[1, 0], [0, 2]], np.float32)
    v = np.array([[1, 2], [3, 4]], np.float32)
    return q, k, v


def test_attention_two_tokens_by_hand(backend):
    q, k, v = two_token_case()
    cache = backend.kv_cache_alloc(1, 4, 1, 2)
    out = backend.attention(q, k, v, cache, 0, 0, n_heads=1, n_kv_heads=1, head_dim=2)
    # token 0 sees only itself; token 1 scores (q1.k0, q1.k1) / sqrt(2) = (0, sqrt(2))
    e = math.exp(math.sqrt(2))
    p0, p1 = 1 / (1 + e), e / (1 + e)
    np.testing.assert_allclose(out, [[1, 2], [p0 * 1 + p1 * 3, p0 * 2 + p1 * 4]], rtol=1e-6)
    np.testing.assert_array_equal(cache.k[0, :2], k.astype(np.float16))
    assert not cache.k[0, 2:].any()


def test_attention_incremental_equals_batch(backend):
    q, k, v = two_token_case()
    batch = backend.attention(q, k, v, backend.kv_cache_alloc(1, 4, 1, 2), 0, 0, 1, 1, 2)
    cache = backend.kv_cache_alloc(1, 4, 1, 2)
    first = backend.attention(q[:1], k[:1], v[:1], cache, 0, 0, 1, 1, 2)
    second = backend.attention(q[1:], k[1:], v[1:], cache, 0, 1, 1, 1, 2)
    np.testing.assert_allclose(np.concatenate([first, second]), batch, rtol=1e-6)


def test_attention_groups_query_heads_onto_kv_heads(backend):
    q = np.ones((1, 4 * 2), np.float32)  # 4 query heads of 2
    k = np.ones((1, 2 * 2), np.float32)  # 2 kv heads
    v = np.array([[1, 1, 5, 5]], np.float32)
    out = backend.attention(q, k, v, backend.kv_cache_alloc(1, 2, 2, 2), 0, 0, 4, 2, 2)
    assert out.tolist() == [[1, 1, 1, 1, 5, 5, 5, 5]]  # heads 0, 1 -> kv 0; heads 2, 3 -> kv 1


def test_attention_rounds_queries_and_cache_to_float16(backend):
    q = np.array([[0.0], [1 + 2**-12]], np.float32)  # f16 rounds q1 to exactly 1
    k = np.array([[0.0], [1 / 3]], np.float32)
    v = np.array([[0.0], [1.0]], np.float32)
    cache = backend.kv_cache_alloc(1, 2, 1, 1)
    out = backend.attention(q, k, v, cache, 0, 0, 1, 1, 1)
    k1 = float(np.float16(1 / 3))
    assert cache.k[0, 1, 0] == np.float16(1 / 3)
    assert out[1, 0] == pytest.approx(1 / (1 + math.exp(-k1)), rel=1e-6)  # softmax(0, 1 * k1)
    unrounded = 1 / (1 + math.exp(-(1 + 2**-12) * k1))
    assert abs(out[1, 0] - unrounded) > 1e-5


def test_attention_rejects_overflowing_the_cache(backend):
    q, k, v = two_token_case()
    with pytest.raises(ValueError, match="exceed the cache"):
        backend.attention(q, k, v, backend.kv_cache_alloc(1, 2, 1, 2), 0, 1, 1, 1, 2)


# -- elementwise and row ops --------------------------------------------------------------------


def test_gates_by_hand(backend):
    gate = np.array([[-1, 0.5, 2]], np.float32)
    up = np.array([[3, 4, 5]], np.float32)
    assert backend.relu2_mul(gate, up).tolist() == [[0, 1, 20]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exp overflow for very negative gates is expected
        gate = np.array([[0, -200, 1]], np.float32)
        y = backend.silu_mul(gate, np.array([[1, 1, 2]], np.float32))
    np.testing.assert_allclose(y, [[0, 0, 2 / (1 + math.exp(-1))]], rtol=1e-6)


def test_row_ops_by_hand(backend):
    a = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    assert backend.add(a, a).tolist() == [[2, 4], [6, 8], [10, 12]]
    assert backend.slice_rows(a, 2, 3).tolist() == [[5, 6]]
    assert backend.concat_rows([a[:1], a[2:]]).tolist() == [[1, 2], [5, 6]]
    with pytest.raises(ValueError, match="rows 2..4"):
        backend.slice_rows(a, 2, 4)


# -- the whole model against bitnet.cpp ---------------------------------------------------------


def fixture_logits(backend, stem: str) -> tuple[np.ndarray, np.ndarray]:
    from bitnet.core.config import ModelConfig
    from bitnet.core.gguf import open_gguf
    from bitnet.core.loader import load_weights
    from bitnet.core.model import Transformer

    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    gguf = open_gguf(FIXTURES / "models" / f"{stem}.gguf")
    config = ModelConfig.from_metadata(gguf.metadata)
    model = Transformer(config, load_weights(gguf, config), backend, 32)
    tokens = np.array(manifest["inputs"][f"{stem.split('-')[0]}_tokens"], np.int32)
    ours = backend.download(model.forward(tokens, 0, last_only=False))
    gguf.close()
    return ours, np.load(FIXTURES / "logits" / f"{stem}.fork.batch.npy")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not found")
def test_i2s_model_reproduces_bitnet_cpp(backend):
    # one llama_decode of 32 tokens in bitnet.cpp; integer parts are exact, so only float
    # epilogue noise remains, except where a rounding flip of an int8 activation kicks in
    ours, fork = fixture_logits(backend, "mid-b158-i2_s")
    assert np.abs(ours - fork).max() < 1e-4
    ours, fork = fixture_logits(backend, "tiny-b158-i2_s")
    assert np.abs(ours[:13] - fork[:13]).max() < 1e-4  # position 13 flips one activation


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures not found")
def test_f16_model_tracks_bitnet_cpp(backend):
    ours, fork = fixture_logits(backend, "mid-b158-f16")
    cos = (ours * fork).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(fork, axis=1)
    assert cos.min() > 0.99999
    assert (ours.argmax(1) == fork.argmax(1)).all()
