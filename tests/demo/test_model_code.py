"""The training script's PyTorch model code agrees with the engine (needs torch; skipped without).

- its quantizers produce exactly the integers of ``bitnet.formats.activations`` (property test);
- a randomly initialised model exported with tools/export_demo.py gives, run by the engine, the
  same logits as PyTorch (cosine >= 0.999) in I2_S and TQ2_0.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

torch = pytest.importorskip("torch", reason="torch is only needed to train/export the demo model")

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

from demo_model import (
    BitLinear,
    DemoConfig,
    DemoLM,
    activation_int8_ste,
    weight_codes_ste,
)
from export_demo import export

from bitnet.testing.synthetic import llama_vocab
from bitnet.formats.activations import quantize_per_token_i8
from bitnet.hal.weight_formats import WeightFormat

FINITE = st.floats(-1000.0, 1000.0, width=32, allow_nan=False, allow_subnormal=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([256, 512])),
              elements=FINITE))
def test_activation_quantizer_matches_engine(x: np.ndarray) -> None:
    q_ref, s_ref = quantize_per_token_i8(x)
    q, a = activation_int8_ste(torch.from_numpy(x))
    np.testing.assert_array_equal(q.numpy(), q_ref.astype(np.float32))
    np.testing.assert_array_equal(a.numpy()[:, 0], s_ref)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (8, 256), elements=FINITE))
def test_weight_codes_are_the_absmean_ternary(w: np.ndarray) -> None:
    codes, s = weight_codes_ste(torch.from_numpy(w))
    expected_s = max(float(np.abs(w).astype(np.float64).mean()), 1e-5)
    assert float(s) == pytest.approx(expected_s, rel=1e-5)
    c = codes.numpy()
    assert set(np.unique(c)) <= {-1.0, 0.0, 1.0}
    # away from rounding ties, code = clamp(round(w / s))
    ratio = w / np.float32(s)
    clear = np.abs(np.abs(ratio) - 0.5) > 1e-3
    np.testing.assert_array_equal(c[clear], np.clip(np.rint(ratio), -1, 1)[clear])


def test_bitlinear_equals_the_integer_kernel_formula() -> None:
    torch.manual_seed(1)
    layer = BitLinear(512, 256)
    x = torch.randn(5, 512) * 3
    y = layer(x).detach().numpy()
    codes, s = weight_codes_ste(layer.weight)
    q, s_act = quantize_per_token_i8(x.numpy())
    dot = q.astype(np.int64) @ codes.detach().numpy().astype(np.int64).T  # exact integers
    expected = (dot.astype(np.float32) / s_act[:, None]) * np.float32(s)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def _random_model(seed: int) -> DemoLM:
    torch.manual_seed(seed)
    model = DemoLM(DemoConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, head_dim=64,
                              d_ff=512, context_length=64))
    with torch.no_grad():
        # trained-looking norms and a larger embedding, so logits are far from uniform
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
        model.token_embd.weight.normal_(0.0, 0.25)
    return model.eval()


@pytest.mark.parametrize("fmt", [WeightFormat.I2_S, WeightFormat.TQ2_0])
def test_exported_model_matches_pytorch(tmp_path: Path, fmt: WeightFormat) -> None:
    import bitnet

    model = _random_model(seed=7)
    path = export(model, llama_vocab(512), tmp_path / f"m-{fmt.value}.gguf", fmt)
    ids = np.random.default_rng(3).integers(3, 512, size=40).astype(np.int32)
    with torch.no_grad():
        expected = model(torch.from_numpy(ids.astype(np.int64))[None])[0].numpy()
    with bitnet.load(path, device="reference") as engine:
        got = np.asarray(engine.logits(ids), dtype=np.float64)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.999, f"{fmt.value}: min cosine {cos.min():.6f}"
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
