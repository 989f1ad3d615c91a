"""Launch geometry and the host copies of the kernels' constants (no GPU needed)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitnet_cuda import launch, ptx

# launch.py constant -> (kernel file, #define name)
MIRRORED = {
    "ROWS_PER_BLOCK": [("linear_ternary.cu", "ROWS_PER_BLOCK"),
                       ("linear_float.cu", "ROWS_PER_BLOCK")],
    "GEMM_TOKENS": [("linear_ternary.cu", "GEMM_TOKENS"), ("linear_float.cu", "GEMM_TOKENS")],
    "QUANT_THREADS": [("linear_ternary.cu", "QUANT_THREADS")],
    "QK_K": [("linear_ternary.cu", "QK_K"), ("linear_float.cu", "QK_K")],
    "NORM_THREADS": [("rmsnorm.cu", "NORM_THREADS")],
    "ROPE_THREADS": [("rope.cu", "ROPE_THREADS")],
    "KV_THREADS": [("attention.cu", "KV_THREADS")],
    "ATT_WARPS": [("attention.cu", "ATT_WARPS")],
    "ATT_MAX_DIM": [("attention.cu", "ATT_MAX_DIM")],
    "ELEM_THREADS": [("gating.cu", "ELEM_THREADS"), ("add.cu", "ELEM_THREADS")],
    "EMBED_THREADS": [("embed.cu", "EMBED_THREADS")],
}


@pytest.mark.parametrize("name", sorted(MIRRORED))
def test_constants_match_the_kernel_sources(name):
    for filename, define in MIRRORED[name]:
        text = (ptx.KERNEL_DIR / filename).read_text()
        found = re.search(rf"#define {define} (\d+)", text)
        assert found, f"{define} not defined in {filename}"
        assert int(found.group(1)) == getattr(launch, name), f"{filename}: {define}"


@given(rows=st.integers(1, 200_000), n=st.integers(1, 4096))
def test_linear_grid_covers_every_row_and_token_once(rows, n):
    spec = launch.linear_launch("i2s", rows, n)
    tile = 1 if n == 1 else launch.GEMM_TOKENS
    assert spec.kernel == ("linear_i2s_gemv" if n == 1 else "linear_i2s_gemm")
    assert spec.block == (launch.ROWS_PER_BLOCK * 32, 1, 1)
    gx, gy, gz = spec.grid
    assert gz == 1
    assert (gx - 1) * launch.ROWS_PER_BLOCK < rows <= gx * launch.ROWS_PER_BLOCK
    assert (gy - 1) * tile < n <= gy * tile


def test_quantize_and_row_geometry():
    assert launch.quantize_launch("per_token_i8", 5, 2560).grid == (5, 1, 1)
    spec = launch.quantize_launch("q8_k", 3, 2560)
    assert spec.grid == (10, 3, 1) and spec.block == (256, 1, 1)
    with pytest.raises(ValueError, match="multiple|K % 256"):
        launch.quantize_launch("q8_k", 1, 300)
    assert launch.elementwise_launch("add", 257).grid == (2, 1, 1)
    assert launch.heads_launch("attention", 20, 7, 256).grid == (20, 7, 1)
    with pytest.raises(ValueError, match="gridDim.y"):
        launch.heads_launch("rope_neox", 20, 70_000, 64)


def test_head_checks():
    launch.check_heads(20, 5, 128)
    with pytest.raises(ValueError, match="multiple"):
        launch.check_heads(20, 3, 128)
    with pytest.raises(ValueError, match="head_dim"):
        launch.check_heads(4, 2, 512)
    with pytest.raises(ValueError, match="K=64"):
        launch.check_width((2, 32), 64, "linear_ternary")
