"""decode_layer (kernels/layer.c): a whole block of one decode token in one call must give the
bits of the op-by-op forward pass, on every kernel table, at any thread count."""

from __future__ import annotations

import numpy as np
import pytest

from bitnet.core.config import ModelConfig
from bitnet.core.gguf import open_gguf
from bitnet.testing.synthetic import make_synthetic_model
from bitnet.core.loader import load_weights
from bitnet.core.model import Transformer
from bitnet.hal.backend import LayerSpec
from bitnet.hal.kv_blocks import KV_BLOCK, blocks_for, cache_rows
from bitnet.hal.weight_formats import WeightFormat

from conftest import make_backend, ternary_tensor

FORMATS = [("i2_s", "bitnet-b1.58"), ("tq2_0", "bitnet"), ("tq1_0", "bitnet")]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("layer-models")
    files = {}
    for fmt, arch in FORMATS:
        # d 256 with 2 KV heads of 64, F 768: row counts that are not multiples of 128, so
        # the dynamic row chunks end in partial ones
        files[fmt] = make_synthetic_model(
            root / f"{fmt}.gguf", d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=768,
            n_vocab=300, n_ctx=64, arch=arch, weight_format=WeightFormat(fmt),
            embed_format=WeightFormat.Q6_K, seed=5)
    return files


def transformer(path, variant: str, threads: int) -> Transformer:
    gguf = open_gguf(path)
    config = ModelConfig.from_metadata(gguf.metadata)
    return Transformer(config, load_weights(gguf, config), make_backend(variant, threads), 64)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fmt", [f for f, _ in FORMATS])
def test_decode_layer_is_the_op_by_op_block(model_files, variant, fmt, threads):
    """Whole blocks in a contiguous cache, op by op, and whole blocks through a shuffled block
    table of a pool (decode steps crossing block edges): the same logits and cached values."""
    t = transformer(model_files[fmt], variant, threads)
    assert all(f is not None for f in t.fused)  # every block of a ternary file runs whole
    end = 40
    table = np.array([4, 1, 5, 0, 2, 3], np.int32)[:blocks_for(end)]
    whole, ops, pool = t.new_cache(), t.new_cache(), t.new_cache(6 * KV_BLOCK)
    prompt = np.asarray([1, 17, 33, 4, 250], np.int32)
    logits = {}
    for name, cache, tab in (("whole", whole, None), ("ops", ops, None),
                             ("paged", pool, table)):
        fused = t.fused
        if name == "ops":
            t.fused = [None] * len(fused)
        t.forward(prompt, 0, True, cache, tab)
        rows = [t.ops.download(t.forward(np.asarray([(7 * p) % 299 + 1], np.int32), p, True,
                                         cache, tab)) for p in range(len(prompt), end)]
        t.fused = fused
        logits[name] = np.concatenate(rows)
    assert t.ops.counts["decode_layer"] == 2 * 2 * (end - len(prompt))
    for name in ("ops", "paged"):
        np.testing.assert_array_equal(logits["whole"].view(np.uint32),
                                      logits[name].view(np.uint32))
    np.testing.assert_array_equal(whole.k, ops.k)
    np.testing.assert_array_equal(whole.v, ops.v)
    rows = cache_rows(table, np.arange(end))
    np.testing.assert_array_equal(pool.k[:, rows], whole.k[:, :end])
    np.testing.assert_array_equal(pool.v[:, rows], whole.v[:, :end])


def _vector(rng, width):
    return rng.uniform(0.5, 1.5, (1, width)).astype(np.float32)


@pytest.mark.parametrize("activation", ["relu2", "silu"])
def test_block_without_sub_norms(variant, activation):
    """A block without sub-norms (the plain Llama block) skips them, nothing else changes."""
    rng = np.random.default_rng(11)
    b = make_backend(variant, 2)
    d, heads, kv_heads, hd, ff = 256, 4, 1, 64, 512

    def w(m, k):
        return b.load_weight(ternary_tensor(WeightFormat.I2_S,
                                            rng.integers(-1, 2, (m, k)).astype(np.int8), rng))

    spec = LayerSpec(
        attn_norm=b.upload(_vector(rng, d)), attn_q=w(heads * hd, d), attn_k=w(kv_heads * hd, d),
        attn_v=w(kv_heads * hd, d), attn_sub_norm=None, attn_output=w(d, heads * hd),
        ffn_norm=b.upload(_vector(rng, d)), ffn_gate=w(ff, d), ffn_up=w(ff, d),
        ffn_sub_norm=None, ffn_down=w(d, ff), activation=activation, n_heads=heads,
        n_kv_heads=kv_heads, head_dim=hd, rope_theta=10000.0, eps=1e-5)
    layer = b.prepare_layer(spec)
    assert layer is not None
    whole, ops = b.kv_cache_alloc(1, 16, kv_heads, hd), b.kv_cache_alloc(1, 16, kv_heads, hd)
    gate = b.silu_mul if activation == "silu" else b.relu2_mul
    for pos in range(6):
        h = b.upload(rng.standard_normal((1, d)).astype(np.float32))
        got = b.download(b.decode_layer(layer, h, whole, 0, pos))
        x = b.rmsnorm(h, spec.attn_norm, spec.eps)
        q = b.rope(b.linear_ternary(spec.attn_q, x), pos, heads, hd, spec.rope_theta)
        k = b.rope(b.linear_ternary(spec.attn_k, x), pos, kv_heads, hd, spec.rope_theta)
        a = b.attention(q, k, b.linear_ternary(spec.attn_v, x), ops, 0, pos, heads, kv_heads, hd)
        h2 = b.add(h, b.linear_ternary(spec.attn_output, a))
        x = b.rmsnorm(h2, spec.ffn_norm, spec.eps)
        f = gate(b.linear_ternary(spec.ffn_gate, x), b.linear_ternary(spec.ffn_up, x))
        want = b.download(b.add(h2, b.linear_ternary(spec.ffn_down, f)))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(whole.k, ops.k)


def test_bad_calls_are_refused(model_files):
    t = transformer(model_files["i2_s"], "generic", 1)
    b = t.ops.inner
    h = b.upload(np.zeros((1, 256), np.float32))
    with pytest.raises(ValueError, match=r"positions 64..64 exceed the cache \(64 positions"):
        b.decode_layer(t.fused[0], h, t.cache, 0, 64)
    with pytest.raises(ValueError, match="need 2 blocks"):
        b.decode_layer(t.fused[0], h, t.cache, 0, KV_BLOCK, np.array([1], np.int32))
    with pytest.raises(ValueError, match=r"entries must be in \[0, 4\)"):
        b.decode_layer(t.fused[0], h, t.cache, 0, 0, np.array([4], np.int32))
    with pytest.raises(ValueError, match="layer 2"):
        b.decode_layer(t.fused[0], h, t.cache, 2, 0)
    with pytest.raises(ValueError, match=r"\[1, 256\]"):
        b.decode_layer(t.fused[0], b.upload(np.zeros((2, 256), np.float32)), t.cache, 0, 0)


def test_float_blocks_and_the_switch_run_op_by_op(model_files, monkeypatch):
    t = transformer(model_files["tq2_0"], "generic", 1)
    b = t.ops.inner
    spec = t._spec(t.layers[0])
    head = t.head  # a Q6_K weight: no whole-block path for a block that has one
    assert b.prepare_layer(LayerSpec(**{**vars(spec), "ffn_down": head})) is None
    monkeypatch.setenv("BITNET_CPU_LAYERS", "ops")
    assert b.prepare_layer(spec) is None
