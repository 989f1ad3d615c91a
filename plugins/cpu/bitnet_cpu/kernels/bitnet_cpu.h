/* bitnet_cpu.h: the kernel table every ISA file fills in, and the drivers that use it.
 *
 * Layout conventions (shared by every ISA):
 * - Ternary weights live in ONE internal layout, "t2": each row is K/4 bytes; every 128 elements
 *   form a 32-byte group and byte b of a group holds elements b, b+32, b+64, b+96 at bits 7:6,
 *   5:4, 3:2, 1:0 as codes 0/1/2 = -1/0/+1. This is exactly the on-disk I2_S layout, so I2_S
 *   weights are used in place from the memory map (no copy, fast load); TQ2_0 and TQ1_0 are
 *   repacked into it once at load (TQ1_0's base-3 decode is then never paid per token).
 * - Activations for ternary matmuls are int8, one row per token, in natural order.
 * - Ternary tile kernels return raw sums of code * q (codes unsigned 0..2); the driver subtracts
 *   the activation block sums (code - 1 = value) in its exact integer epilogue.
 */
#ifndef BITNET_CPU_H
#define BITNET_CPU_H

#include <stddef.h>
#include <stdint.h>

#define BN_TILE_MAX_TOKENS 16

/* Portable C loops compiled three times (AVX-512, AVX2, baseline), the loader picking the
 * clone the CPU runs: the vectorizer then uses the widest registers without an ISA file. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BN_WIDE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BN_WIDE
#endif

/* 16 lanes as GCC vectors (one zmm in an AVX-512 clone, narrower elsewhere); aligned(4) +
 * may_alias: loads and stores straight from any float or int32 pointer. */
typedef float bn_v16f __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t bn_v16i __attribute__((vector_size(64), aligned(4), may_alias));

/* Software prefetch distance (bytes ahead in the weight stream). Decode streams every weight
 * once per token; one core's hardware prefetchers alone keep too few lines in flight to reach
 * DRAM bandwidth while the kernel's own instructions fill the reorder buffer, so the kernels ask
 * for the lines themselves. A prefetch past the end of the matrix is harmless (never faults).
 * Measured end to end on the Zen 4 dev VM (2026-11-23, 1 thread, TQ2_0 2B file): the ternary
 * kernels stream best at 2 KB (8 KB cost them ~5 ms per token), while the Q6_K head went from
 * ~19 ms at 2 KB to ~15 ms at 8 KB (its 128256 x 2100-byte rows are one long stream). */
#define BN_PREFETCH_BYTES 2048
#define BN_PREFETCH_HEAD_BYTES 8192

/* Raw sums for one weight row against nt <= BN_TILE_MAX_TOKENS activation rows.
 * w: [K/4] t2 codes; q: nt rows of K int8 (row stride qstride);
 * sums: [K / (128 * gps)][nt] int32 (block-major, so the driver's epilogue runs across tokens
 * with contiguous loads), each the sum over gps consecutive 128-groups. */
typedef void (*bn_ternary_tile_fn)(const uint8_t *w, int K, int gps, const int8_t *q,
                                   size_t qstride, int nt, int32_t *sums);

/* The row-interleaved layout "r16" (tables with row_group = 16): rows in groups of 16, the
 * codes of a group stored as 64-byte chunks, chunk (g, j) for 128-group g and j = 0..7 holding,
 * for lane r = 0..15, the four t2 bytes 4j..4j+3 of group g of row 16*G + r (so field k of
 * byte i is column 128g + 32k + 4j + i). A 32-bit SIMD lane is then one row: vpdpbusd against a
 * broadcast of four activations sums 16 rows at once and a block's sums come out one per lane
 * with no horizontal reduction. w: one row group (16 * K/4 bytes); sums: [nsum][nt][16]. */
typedef void (*bn_ternary_rows16_fn)(const uint8_t *w, int K, int gps, const int8_t *q,
                                     size_t qstride, int nt, int32_t *sums);

/* f32 dot of one quantized/float weight row of K elements with f32 x[K]. */
typedef float (*bn_dot_row_fn)(const void *row, const float *x, int K);

/* Q6_K row x Q8_K activations (llama.cpp's Q6_K path, backend.py linear_float): q [K] int8,
 * pair32 [K/2] = 32 * (q[2i] + q[2i+1]) (the -32 offset of the 6-bit codes, precomputed once
 * per token), dy [K/256] the Q8_K scales. Exact per-block integer sums, f32 in block order.
 * A table leaves it NULL where its q6_k_rows with one token is the faster decode path. */
typedef float (*bn_dot_q6_k_q8_k_fn)(const void *row, const int8_t *q,
                                     const int16_t *pair32, const float *dy, int K);

/* Batched Q6_K (n > 1 tokens; one token too where the table has no per-row dot), in two steps
 * with an ISA-specific activation layout.
 * - q6_k_act: one token's Q8_K codes q [K] -> its activations qa [K/256 * q6_k_act_block bytes]
 *   in the layout the table's q6_k_rows reads (run once per token and call).
 * - q6_k_rows: nr <= BN_Q6_K_ROWS consecutive rows (w: the first, row_bytes apart; in a
 *   q6_k_grouped table: the start of their group, below) x
 *   nt <= BN_Q6_K_TOKENS tokens (token t's activations at qa + t * qa_stride, its Q8_K scales at
 *   dy + t * K/256): y [t * ystride + r] = that row's dot with that token (times out_scale when
 *   out_scale != 1). Exact per-block integer sums sum_j sc_j * sum_k (q6_k - 32) q8_k and the f32
 *   epilogue acc += (float)isum * (d_w * d_y) in block order, so every (row, token) equals what
 *   dot_q6_k_q8_k_generic gives for it alone: a token's logits do not depend on the batch. */
#define BN_Q6_K_ROWS 16
#define BN_Q6_K_TOKENS 64
/* The grouped Q6_K layout (tables with q6_k_grouped; repacked once at load by
 * q6_k_to_groups16): rows in groups of 16 (the last one padded with zero rows), a group taking
 * the 16 x row_bytes bytes its rows take in the file. A row's block is
 *   d      f16 bits;
 *   scales int8 [16], byte i = the scale of sub-block s(i) = 4 (i % 4) + i / 4;
 *   codes  [192], the block's four 64-code vectors in the kernel's lane order
 *          (u_m[4i + e] = code 16 s(i) + 4m + e) as three byte vectors
 *          L_k[j] = u_k[j] | (bits 4-2k, 5-2k of u3[j]) << 6, k = 0, 1, 2;
 * and a group holds its nb = K/256 blocks in pairs of 6720 bytes (105 cache lines), each in the
 * order a decode reads it: the pair's d [2][16 rows], block 2p's scales [16 rows][16], its codes
 * [16 rows][192], block 2p + 1's scales, its codes. When nb is odd the last block stands alone
 * as codes, scales, d. So a group is one stream read front to back with the codes on 64-byte
 * lines: the hardware prefetcher follows it (a gap of a few lines in a stream stops it: 11
 * against 32 GB/s on one Zen 4 core), and a block's codes come out of it with 9 bitwise ops
 * where the file's layout took 8 shuffles and 12 shifts and masks. */
static inline int bn_q6g_sub(int i)  /* the sub-block of lane i */
{
    return 4 * (i % 4) + i / 4;
}
static inline size_t bn_q6g_at(int nb, int b, int part)  /* part: 0 d, 1 scales, 2 codes */
{
    size_t at = (size_t)(b / 2) * 6720;
    if (nb - (b & ~1) < 2) {  /* the last block of an odd count: codes, scales, d */
        return at + (part == 2 ? 0 : part == 1 ? 3072 : 3328);
    }
    size_t second = b % 2 ? 3328 : 0;
    return at + (part == 0 ? 32 * (size_t)(b % 2) : part == 1 ? 64 + second : 320 + second);
}
#define bn_q6g_d(nb, b) bn_q6g_at(nb, b, 0)
#define bn_q6g_scales(nb, b) bn_q6g_at(nb, b, 1)
#define bn_q6g_codes(nb, b) bn_q6g_at(nb, b, 2)
typedef void (*bn_q6_k_act_fn)(const int8_t *q, int K, uint8_t *qa);
typedef void (*bn_q6_k_rows_fn)(const uint8_t *w, size_t row_bytes, int nr, int K,
                                const uint8_t *qa, size_t qa_stride, const float *dy, int nt,
                                float *y, size_t ystride, float out_scale);

/* F16 weight rows r0..r1-1 (row stride row_bytes) x n tokens of x [n][K] -> y [n][M]: one
 * SIMD accumulator per (row, token) over K in order, then a horizontal sum, then the scalar
 * tail. Rows and tokens are tiled so that several accumulator chains run at once (a decode
 * step of one token runs rows in eights) and each weight conversion serves up to four tokens;
 * the tiling never changes a (row, token)'s arithmetic, so a token's outputs are the same bits
 * in any batch (the server compares streamed and plain replies token for token). */
typedef void (*bn_f16_rows_fn)(const uint8_t *w, size_t row_bytes, int r0, int r1,
                               const float *x, int n, int K, float *y, int M);

typedef struct {
    const char *name;             /* "generic", "avx2", "avx512", "neon" */
    int tile_tokens;              /* tokens per tile the kernel handles best (<= max) */
    bn_ternary_tile_fn ternary_tile;
    int row_group;                /* 0: per-row t2 layout; 16: r16 layout + ternary_rows16 */
    bn_ternary_rows16_fn ternary_rows16;
    bn_dot_row_fn dot_f32;
    bn_dot_row_fn dot_f16;
    bn_f16_rows_fn f16_rows;      /* NULL: linear_float runs dot_f16 per row and token */
    bn_dot_row_fn dot_bf16;
    bn_dot_row_fn dot_q8_0;
    bn_dot_q6_k_q8_k_fn dot_q6_k_q8_k;
    int q6_k_act_block;           /* bytes of q6_k_act's layout per 256 columns of a token */
    bn_q6_k_act_fn q6_k_act;
    bn_q6_k_rows_fn q6_k_rows;
    int q6_k_grouped;             /* 1: q6_k_rows reads the grouped layout (no per-row dot) */
    void (*f16_to_f32_row)(const uint16_t *src, float *dst, int count);
    /* f32 -> f16 bits, round to nearest even (bn_f32_to_f16's results): the KV cache store and
     * attention's rounding of q */
    void (*f32_to_f16_row)(const float *src, uint16_t *dst, int count);
} bn_kernels;

/* Per-ISA tables; a table exists only where its file was compiled. */
extern const bn_kernels bn_kernels_generic;
#if defined(__x86_64__) || defined(_M_X64)
extern const bn_kernels bn_kernels_avx2;
extern const bn_kernels bn_kernels_avx512;
#endif
#if defined(__aarch64__)
extern const bn_kernels bn_kernels_neon;
#endif

/* The table named `name`, or NULL when this build has no such table. */
const bn_kernels *bn_kernels_get(const char *name);

/* Weight format ids used by the drivers (values are ggml type ids). */
enum {
    BN_F32 = 0, BN_F16 = 1, BN_Q8_0 = 8, BN_Q6_K = 14, BN_BF16 = 30,
    BN_TQ1_0 = 34, BN_TQ2_0 = 35, BN_I2_S = 36
};

/* ---- generic scalar row kernels (ground truth; also used by the other tables) ---- */
void ternary_tile_generic(const uint8_t *w, int K, int gps, const int8_t *q, size_t qstride,
                          int nt, int32_t *sums);
float dot_f32_f32_generic(const void *row, const float *x, int K);
float dot_f16_f32_generic(const void *row, const float *x, int K);
float dot_bf16_f32_generic(const void *row, const float *x, int K);
float dot_q8_0_f32_generic(const void *row, const float *x, int K);
float dot_q6_k_q8_k_generic(const void *row, const int8_t *q, const int16_t *pair32,
                            const float *dy, int K);
/* batched Q6_K, generic: activations widened to int16 (512 bytes a block), rows unpacked to
 * w16 = sc_j * (q6 - 32) once and dotted with every token */
#define BN_Q6_K_ACT_BLOCK_I16 512
/* the AVX-512 batched layout (linear_float_avx512.c): 256 permuted int8 + 16 int32 a block */
#define BN_Q6_K_ACT_BLOCK_AVX512 320
void q6_k_act_i16_generic(const int8_t *q, int K, uint8_t *qa);
void q6_k_rows_generic(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                       size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                       float out_scale);
void f16_to_f32_row_generic(const uint16_t *src, float *dst, int count);
void f32_to_f16_row_generic(const float *src, uint16_t *dst, int count);

/* ---- half precision helpers (exact, portable) ---- */
float bn_f16_to_f32(uint16_t h);
uint16_t bn_f32_to_f16(float f);  /* round to nearest even, like numpy */
static inline float bn_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

/* A 210-byte Q6_K block's 256 codes (0..63, the value is code - 32) in column order: ql's
 * low nibbles and qh's 2-bit fields as ggml lays them out; code e is in sub-block e / 16. */
static inline void bn_q6_k_codes(const uint8_t *block, uint8_t *codes)
{
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = block + 64 * half;
        const uint8_t *qh = block + 128 + 32 * half;
        uint8_t *o = codes + 128 * half;
        for (int l = 0; l < 32; l++) {
            o[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
            o[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            o[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            o[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
}

/* ---- repacking (load time) ---- */
/* Nonzero when any 2-bit field of data[n] equals 3 (an invalid ternary code). */
int t2_has_code3(const uint8_t *data, size_t n);
/* t2 codes [M][K/4] -> r16 layout [ceil(M/16)*16][K/4] (padding rows are zero bytes). */
void t2_to_rows16(const uint8_t *t2, int M, int K, uint8_t *out, int nthreads);
/* TQ2_0 rows [M][K/256*66] -> t2 codes [M][K/4] + block scales d [M][K/256] (f32). */
void tq2_0_repack(const uint8_t *src, int M, int K, uint8_t *codes, float *d, int nthreads);
/* Hint the kernel to drop [addr, addr+len) from the resident set (0, or -1 when the kernel
 * does not support MADV_PAGEOUT; contents never change). */
int release_pages(const void *addr, size_t len);
/* Ask for transparent huge pages over [addr, addr+len) before it is first written (0, or -1
 * where the OS has no such hint); contents never change. */
int advise_hugepages(const void *addr, size_t len);
/* Allocations below mmap_below bytes come from the heap, and freed memory stays there until
 * more than trim_above bytes are free at its top (glibc's mallopt; 0, or -1 where the C library
 * has no such setting or refused the values). Process-wide. */
int keep_freed_heap(size_t mmap_below, size_t trim_above);
/* Q6_K rows [M][K/256*210] -> the grouped layout [ceil(M/16)*16 * K/256*210] (above). */
void q6_k_to_groups16(const uint8_t *src, int M, int K, uint8_t *out, int nthreads);
/* Row `row` of a grouped Q6_K matrix back as its K/256 Q6_K blocks (out [K/256*210]). */
void q6_k_group_row(const uint8_t *groups, int K, int row, uint8_t *out);
/* TQ1_0 rows [M][K/256*54] -> t2 codes + block scales, decoding base-3 once. */
void tq1_0_repack(const uint8_t *src, int M, int K, uint8_t *codes, float *d, int nthreads);

/* ---- activation quantization ---- */
/* bitnet.cpp per-token int8: q [n][K], s [n] (127/absmax), asum [n]. */
void act_quantize_per_token_i8(const float *x, int n, int K, int8_t *q, float *s,
                               int32_t *asum);
/* llama.cpp Q8_K per 256-block: q [n][K], d [n][K/256], bsum [n][K/256]. */
void act_quantize_q8_k(const float *x, int n, int K, int8_t *q, float *d, int32_t *bsum);

/* ---- drivers (OpenMP, nthreads threads) ---- */
/* Row units (16 rows) a thread takes at a time from a one-token matmul shared with dynamic
 * scheduling: about BN_RUNS_PER_THREAD runs per thread, never fewer than 8 units. Each run is
 * one front-to-back stream and each new one costs the hardware prefetchers a restart; dynamic
 * still lets a running thread take over the rows of one the scheduler stalled. Zen 4 dev VM, 2
 * threads, one-token r16 GEMVs over 256 MB of copies, runs of 8 units against this rule,
 * interleaved in one process (2026-12-05): 34-48 against 49-55 GB/s while the bus gave 60 GB/s
 * to two threads, equal (36-37) while it gave 37. */
#define BN_RUNS_PER_THREAD 2
static inline int bn_stream_chunk(int units, int nthreads)
{
    int c = units / (BN_RUNS_PER_THREAD * (nthreads > 0 ? nthreads : 1));
    return c < 8 ? 8 : c;
}
/* The end of run c of `total` units shared out in runs of ch: run c is [c ch, bn_run_end). */
static inline int bn_run_end(int c, int ch, int total)
{
    return (c + 1) * ch < total ? (c + 1) * ch : total;
}
/* y [n][M] = ternary W [M][K] (t2 codes, fmt I2_S/TQ2_0/TQ1_0) x f32 x [n][K]. For I2_S `scales`
 * points at the one tensor scale, for TQ formats at the block scales [M][K/256] (r16 tables:
 * [ceil(M/16)][K/256][16], rows of a group side by side). Returns 0 or a
 * negative error (-1: out of memory, -2: bad shape). */
int linear_ternary(const bn_kernels *kt, int fmt, const uint8_t *codes, const float *scales,
                   int M, int K, const float *x, int n, float *y, float out_scale, int nthreads);
/* y [n][M] = float-format W (rows of row_bytes) x x [n][K]; Q6_K with Q8_K activations. */
int linear_float(const bn_kernels *kt, int fmt, const uint8_t *w, size_t row_bytes, int M, int K,
                 const float *x, int n, float *y, float out_scale, int nthreads);
/* One row of a float-format table decoded to f32 (embedding lookup). */
int dequantize_row(int fmt, const uint8_t *row, int K, float *out);

/* ---- elementwise / attention ops (generic C, OpenMP) ---- */
void rmsnorm_f32(const float *x, const float *w, int n, int K, float eps, float *y, int nthreads);
void rope_neox_f32(float *x, int n, int n_heads, int head_dim, int pos, double theta);
void relu2_mul_f32(const float *g, const float *u, size_t count, float *y, int nthreads);
void silu_mul_f32(const float *g, const float *u, size_t count, float *y, int nthreads);
void add_f32(const float *a, const float *b, size_t count, float *y, int nthreads);
/* Paged KV caches (bitnet.hal.kv_blocks, whose KV_BLOCK this must equal: backend.py checks):
 * a block table, int32 [T], places position p at cache row
 * table[p / BN_KV_BLOCK] * BN_KV_BLOCK + p % BN_KV_BLOCK; a NULL table places it at row p.
 * The caller checks that the table covers every position a call reads or writes. */
#define BN_KV_BLOCK 16

/* kcache, vcache: [n_ctx][Hkv*D] f16 for one layer. Stores k, v at positions pos..pos+n-1
 * (through table, NULL: rows pos..), then attends over positions 0..pos+n-1. Returns 0, or -1
 * when the attention scratch cannot be allocated (out is then not fully written). */
int attention_f16kv(const bn_kernels *kt, const float *q, const float *k, const float *v,
                    uint16_t *kcache, uint16_t *vcache, const int32_t *table, int n, int pos,
                    int n_heads, int n_kv_heads, int head_dim, float *out, int nthreads);
/* One decode step of B sequences of one pool: row r of q [B][H*D] and k, v [B][Hkv*D] (before
 * RoPE; q and k are rotated in place) is the token at positions[r] through block table
 * tables + r * table_len, in this layer's [n_ctx][Hkv*D] f16 planes kcache, vcache; the rows
 * run in order, each as rope + rope + attention_f16kv. Writes out [B][H*D]; 0 or -1 (out of
 * memory). */
int attention_rows_f16kv(const bn_kernels *kt, float *q, float *k, const float *v,
                         uint16_t *kcache, uint16_t *vcache, const int32_t *positions,
                         const int32_t *tables, int table_len, int B, int n_heads,
                         int n_kv_heads, int head_dim, double theta, float *out, int nthreads);

/* ---- pieces the drivers share with decode_layer (layer.c); each runs on the calling thread ---- */
/* y = rmsnorm(x) * w for one row of K values (rmsnorm_f32's arithmetic). */
void rmsnorm_row_f32(const float *x, const float *w, int K, float eps, float *y);
/* y = act(g) * u, act squared ReLU or (silu != 0) SiLU, as relu2_mul_f32 / silu_mul_f32. */
void gate_row_f32(int silu, const float *g, const float *u, size_t count, float *y);
/* y = a + b, as add_f32. */
void add_row_f32(const float *a, const float *b, size_t count, float *y);
/* Tokens t0..t1-1 of x [n][K] quantized as linear_ternary does (per_token: I2_S's int8 per
 * token; else Q8_K blocks), block data in the [block][token] layout its epilogues read. */
void quantize_tokens(const float *x, int n, int K, int per_token, int8_t *q, float *ascale,
                     int32_t *asum, int t0, int t1);
/* Rows 16 u0 .. 16 u1 - 1 (units u0..u1-1: r16 row groups, or blocks of t2 rows) of a
 * ternary matmul, with activations from quantize_tokens: exactly what linear_ternary computes
 * for those rows. One call per run of units: a decode streams the run's weights with nothing
 * between the kernel calls (ternary_row_groups). */
void ternary_units(const bn_kernels *kt, int fmt, const uint8_t *codes, const float *scales,
                   int u0, int u1, int K, const int8_t *q, const float *ascale_t,
                   const int32_t *asum_t, int n, float *y, int M, float out_scale);
/* One decode token (at pos) against KV head kvh: RoPE of that head of k and of its query heads
 * of q (in place), k and v of that head stored at the row of pos (through table, NULL: row
 * pos) of the caches, then attention of those query heads into out; what rope + rope +
 * attention_f16kv give for them. */
int attention_decode_kv_head(const bn_kernels *kt, float *q, float *k, const float *v,
                             uint16_t *kcache, uint16_t *vcache, const int32_t *table, int pos,
                             int kvh, int n_heads, int n_kv_heads, int head_dim, double theta,
                             float *out);  /* 0, or -1 when its scratch cannot be allocated */

/* ---- one transformer block of one decode token in one call (layer.c) ---- */
typedef struct {
    const uint8_t *codes;  /* the backend's layout for this table (t2 or r16) */
    const float *scales;
    int M, K;
    float out_scale;
} bn_matrix;

typedef struct {
    int fmt;                   /* ternary format of all seven matmuls */
    int silu;                  /* gate activation: 0 squared ReLU, 1 SiLU */
    int n_heads, n_kv_heads, head_dim;
    float eps;
    double theta;
    const float *attn_norm;    /* [d] */
    const float *attn_sub_norm;  /* [H*D], or NULL: no sub-norm (plain Llama block) */
    const float *ffn_norm;     /* [d] */
    const float *ffn_sub_norm; /* [F], or NULL */
    bn_matrix q, k, v, o, gate, up, down;
} bn_layer;

/* h [d] += the block's attention and feed-forward outputs for one token at position pos,
 * filling its row (through table, NULL: row pos) of this layer's kcache / vcache
 * ([n_ctx][Hkv*D] f16): the same ops in the same order as the op-by-op forward pass
 * (model.py), so the same bits, run in ONE parallel region with five barriers instead of seven
 * regions and a Python call per op. Returns 0, -1 (out of memory) or -2 (shapes that do not
 * chain). */
int decode_layer(const bn_kernels *kt, const bn_layer *L, float *h, uint16_t *kcache,
                 uint16_t *vcache, const int32_t *table, int pos, int nthreads);

/* Reads data[n] once with nthreads threads (contiguous slices, wide loads) and returns the xor
 * of its 64-bit words: the read-bandwidth probe the benchmarks compare decode against. */
uint64_t stream_read(const uint8_t *data, size_t n, int nthreads);

#endif
