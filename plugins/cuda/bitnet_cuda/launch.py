"""Launch geometry and argument checks for every kernel, as pure functions (no GPU needed).

The constants mirror the ``#define``s in ``kernels/*.cu``; tests/test_launch.py reads the sources
and fails if the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

ROWS_PER_BLOCK = 8  # linear kernels: one warp per output row, 8 rows per block
GEMM_TOKENS = 8  # linear *_gemm kernels: tokens each warp carries (weight reuse)
QUANT_THREADS = 256  # quantize_per_token_i8: threads per token row
QK_K = 256  # quantize_q8_k: one block of 256 threads per 256-element block
NORM_THREADS = 256
ROPE_THREADS = 64
KV_THREADS = 256
ATT_WARPS = 8
ATT_MAX_DIM = 256  # attention keeps head_dim / 32 values per lane in registers
ELEM_THREADS = 256
EMBED_THREADS = 256
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y (and z)

# every entry point and its PyCUDA prepare() signature, in the .cu parameter order:
# P pointer, i int32, f float32, d float64 (tests/test_ptx.py checks them against the PTX)
KERNEL_ARGS = {
    "quantize_per_token_i8": "PiPPP",
    "quantize_q8_k": "PiPPP",
    "linear_i2s_gemv": "PPPPffPiii",
    "linear_i2s_gemm": "PPPPffPiii",
    "linear_tq_gemv": "PPPPPfPiii",
    "linear_tq_gemm": "PPPPPfPiii",
    "linear_f32_gemv": "PPfPiii",
    "linear_f32_gemm": "PPfPiii",
    "linear_f16_gemv": "PPfPiii",
    "linear_f16_gemm": "PPfPiii",
    "linear_bf16_gemv": "PPfPiii",
    "linear_bf16_gemm": "PPfPiii",
    "linear_i8g_gemv": "PPiPfPiii",
    "linear_i8g_gemm": "PPiPfPiii",
    "linear_q6k_gemv": "PPPPPfPiii",
    "linear_q6k_gemm": "PPPPPfPiii",
    "embed_f32": "PPPi",
    "embed_f16": "PPPi",
    "embed_bf16": "PPPi",
    "embed_i8g": "PPiPPi",
    "embed_q6k": "PPPPPi",
    "rmsnorm": "PPPif",
    "rope_neox": "PPiiid",
    "rope_rows": "PPiiPd",
    "kv_store": "PPPPiiii",
    "kv_store_rows": "PPPPiii",
    "attention": "PPPPiiiiiif",
    "attention_rows": "PPPPiiiiif",
    "relu2_mul": "PPPi",
    "silu_mul": "PPPi",
    "add": "PPPi",
}


@dataclass(frozen=True)
class Launch:
    """One kernel launch: which entry point, grid and block (x, y, z)."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_grid_y(n: int, what: str) -> None:
    if n > MAX_GRID_Y:
        raise ValueError(f"bitnet-cuda: {what} needs gridDim.y = {n} > {MAX_GRID_Y}; "
                         "split the batch into smaller chunks")


def linear_launch(family: str, rows: int, n_tokens: int) -> Launch:
    """``linear_<family>_gemv`` for one token (decode), ``_gemm`` for a prompt."""
    if rows <= 0 or n_tokens <= 0:
        raise ValueError(f"bitnet-cuda: linear needs rows > 0 and tokens > 0, got {rows}, "
                         f"{n_tokens}")
    tile = 1 if n_tokens == 1 else GEMM_TOKENS
    kind = "gemv" if n_tokens == 1 else "gemm"
    grid_y = _ceil_div(n_tokens, tile)
    _check_grid_y(grid_y, "linear")
    return Launch(f"linear_{family}_{kind}", (_ceil_div(rows, ROWS_PER_BLOCK), grid_y, 1),
                  (ROWS_PER_BLOCK * 32, 1, 1))


def quantize_launch(mode: str, n_tokens: int, cols: int) -> Launch:
    """Activation quantizer: "per_token_i8" (grid n) or "q8_k" (grid K/256 x n)."""
    if mode == "per_token_i8":
        return Launch("quantize_per_token_i8", (n_tokens, 1, 1), (QUANT_THREADS, 1, 1))
    if mode == "q8_k":
        if cols % QK_K:
            raise ValueError(f"bitnet-cuda: Q8_K needs K % {QK_K} == 0, got K={cols}")
        _check_grid_y(n_tokens, "quantize_q8_k")
        return Launch("quantize_q8_k", (cols // QK_K, n_tokens, 1), (QK_K, 1, 1))
    raise ValueError(f"bitnet-cuda: unknown activation mode {mode!r}")


def rows_launch(kernel: str, n_rows: int, threads: int) -> Launch:
    """One block per row (rmsnorm, embed, kv_store, kv_store_rows)."""
    return Launch(kernel, (n_rows, 1, 1), (threads, 1, 1))


def elementwise_launch(kernel: str, count: int) -> Launch:
    """One thread per element (add, relu2_mul, silu_mul)."""
    if count >= 2**31:
        raise ValueError(f"bitnet-cuda: {kernel} on {count} elements exceeds int32 indexing")
    return Launch(kernel, (max(1, _ceil_div(count, ELEM_THREADS)), 1, 1), (ELEM_THREADS, 1, 1))


def heads_launch(kernel: str, n_heads: int, n_tokens: int, threads: int) -> Launch:
    """Grid (heads, tokens or rows): rope_neox, rope_rows, attention and attention_rows."""
    _check_grid_y(n_tokens, kernel)
    return Launch(kernel, (n_heads, n_tokens, 1), (threads, 1, 1))


def check_heads(n_heads: int, n_kv_heads: int, head_dim: int) -> None:
    """What attention's kernel assumes about the head layout."""
    if n_heads <= 0 or n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(f"bitnet-cuda: n_heads {n_heads} must be a positive multiple of "
                         f"n_kv_heads {n_kv_heads}")
    if not 0 < head_dim <= ATT_MAX_DIM or head_dim % 2:
        raise ValueError(f"bitnet-cuda: head_dim must be even and <= {ATT_MAX_DIM}, got {head_dim}")


def check_width(shape: tuple[int, ...], cols: int, who: str) -> int:
    """x must be 2-D [n, cols] with n >= 1; returns n."""
    if len(shape) != 2 or shape[1] != cols or shape[0] < 1:
        raise ValueError(f"bitnet-cuda.{who}: weight has K={cols}, input has shape {tuple(shape)}")
    return shape[0]
