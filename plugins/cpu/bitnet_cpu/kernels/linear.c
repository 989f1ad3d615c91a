/* linear.c: the OpenMP drivers of linear_ternary and linear_float.
 *
 * Speed choices:
 * - Rows are split into contiguous static chunks per thread, so each thread streams its own
 *   slice of the weight matrix front to back (what the hardware prefetcher handles best).
 * - GEMM (n > 1): for a block of ROW_BLOCK rows (about 10-30 KB of codes, L1/L2 resident) every
 *   tile of tokens is run before moving on, so weights are read from memory once per call and
 *   each 32-byte code group, once unpacked into registers, is reused for all tokens of a tile
 *   (bitnet.cpp's I2_S GEMM idea).
 * - The epilogue is scalar and exact in the order of the contract, so results match the
 *   reference bit for bit (see backend.py linear_ternary).
 */
#include <stdlib.h>
#include <string.h>

#include "bitnet_cpu.h"

#define ROW_BLOCK 16

static void *alloc64(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}

/* Rows r0..r1-1 of y for all n tokens. The activation block data arrives transposed
 * (ascale_t / asum_t: [nsum][n]) so that the epilogue loops run across the tokens of a tile
 * with contiguous loads, which the compiler vectorizes. */
static void ternary_rows(const bn_kernels *kt, int fmt, const uint8_t *codes,
                         const float *scales, int r0, int r1, int K, const int8_t *q,
                         const float *ascale_t, const int32_t *asum_t, int n, float *y, int M,
                         float out_scale)
{
    int groups = K / 128;
    int gps = fmt == BN_I2_S ? groups : 2;
    int nsum = groups / gps;
    int tile = kt->tile_tokens;
    size_t row_bytes = (size_t)K / 4;
    int32_t sums[BN_TILE_MAX_TOKENS * nsum];
    float acc[BN_TILE_MAX_TOKENS];
    for (int t0 = 0; t0 < n; t0 += tile) {
        int nt = n - t0 < tile ? n - t0 : tile;
        for (int r = r0; r < r1; r++) {
            kt->ternary_tile(codes + (size_t)r * row_bytes, K, gps, q + (size_t)t0 * K,
                             (size_t)K, nt, sums);
            if (fmt == BN_I2_S) {
                /* bitnet.cpp epilogue: exact int, one f32 divide, one f32 multiply */
                const float *s = ascale_t + t0;
                const int32_t *as = asum_t + t0;
                for (int t = 0; t < nt; t++) {
                    acc[t] = ((float)(sums[t] - as[t]) / s[t]) * scales[0];
                }
            } else {
                /* llama.cpp Q8_K: per block f32(sumi) * (d_w * d_y), summed in block order */
                const float *dw = scales + (size_t)r * nsum;
                for (int t = 0; t < nt; t++) {
                    acc[t] = 0.0f;
                }
                if (nt == 1) {
                    /* decode: a plain scalar loop (the vectorized form's set-up costs more) */
                    float v = 0.0f;
                    for (int b = 0; b < nsum; b++) {
                        v += (float)(sums[b] - asum_t[(size_t)b * n + t0]) *
                             (dw[b] * ascale_t[(size_t)b * n + t0]);
                    }
                    acc[0] = v;
                }
                for (int b = 0; nt > 1 && b < nsum; b++) {
                    const float *dy = ascale_t + (size_t)b * n + t0;
                    const int32_t *bs = asum_t + (size_t)b * n + t0;
                    const int32_t *sb = sums + (size_t)b * nt;
                    for (int t = 0; t < nt; t++) {
                        acc[t] += (float)(sb[t] - bs[t]) * (dw[b] * dy[t]);
                    }
                }
            }
            for (int t = 0; t < nt; t++) {
                float v = acc[t];
                if (out_scale != 1.0f) {
                    v = v * out_scale;
                }
                y[(size_t)(t0 + t) * M + r] = v;
            }
        }
    }
}

#define DECODE_RUN 8
_Static_assert(DECODE_RUN <= BN_TILE_MAX_TOKENS, "a run's sums fill the buffer of a tile");

/* The epilogue of row group gr for tokens t0..t0+nt-1 from its raw sums gsums ([nsum][nt][16]):
 * y rows 16 gr .. of those tokens. */
static inline __attribute__((always_inline)) void
group_epilogue(int fmt, const float *scales, int gr, int nsum, const int32_t *gsums, int t0,
               int nt, const float *ascale_t, const int32_t *asum_t, int n, float *y, int M,
               float out_scale)
{
    int r0 = gr * 16;
    int rows = M - r0 < 16 ? M - r0 : 16;
    for (int t = 0; t < nt; t++) {
        int tok = t0 + t;
        /* the 16 rows of the group as one vector (a zmm in the AVX-512 clone): written
         * as plain arrays the compiler vectorized the TQ loop across blocks instead,
         * with shuffles and spills that cost 40% of a decode GEMV at K = 6912 */
        bn_v16f acc;
        if (fmt == BN_I2_S) {
            /* bitnet.cpp epilogue: exact int, one f32 divide, one f32 multiply */
            bn_v16i sr = *(const bn_v16i *)(gsums + (size_t)t * 16);
            acc = (__builtin_convertvector(sr - asum_t[tok], bn_v16f) / ascale_t[tok]) *
                  scales[0];
        } else {
            /* llama.cpp Q8_K: per block f32(sumi) * (d_w * d_y), summed in block order */
            acc = (bn_v16f){0.0f};
            for (int b = 0; b < nsum; b++) {
                bn_v16i sr = *(const bn_v16i *)(gsums + ((size_t)b * nt + t) * 16);
                int32_t bs = asum_t[(size_t)b * n + tok];
                float dy = ascale_t[(size_t)b * n + tok];
                /* r16 tables keep TQ block scales as [group][block][16 rows] */
                bn_v16f dw = *(const bn_v16f *)(scales + ((size_t)gr * nsum + b) * 16);
                acc += __builtin_convertvector(sr - bs, bn_v16f) * (dw * dy);
            }
        }
        if (out_scale != 1.0f) {
            acc = acc * out_scale;
        }
        float *yt = y + (size_t)tok * M + r0;
        if (rows == 16) {
            *(bn_v16f *)yt = acc;  /* one store (the loop below became a memcpy call) */
        } else {
            for (int r = 0; r < rows; r++) {
                yt[r] = acc[r];
            }
        }
    }
}

/* Row groups gr0..gr1-1 (16 rows each, r16 layout) of y for all n tokens. The epilogue runs
 * over the 16 rows of a group, the same operations in the same order as ternary_rows. */
/* Only AVX-512 tables use row groups: an AVX-512 clone of this function (picked by the loader
 * from the CPU's real features, so it never runs where unsupported) vectorizes the 16-row
 * epilogue loops one zmm per loop. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "default")))
#endif
static void ternary_row_groups(const bn_kernels *kt, int fmt, const uint8_t *codes,
                               const float *scales, int gr0, int gr1, int K, const int8_t *q,
                               const float *ascale_t, const int32_t *asum_t, int n, float *y,
                               int M, float out_scale)
{
    int groups = K / 128;
    int gps = fmt == BN_I2_S ? groups : 2;
    int nsum = groups / gps;
    int tile = kt->tile_tokens;
    size_t group_bytes = (size_t)K * 4;  /* 16 rows of K/4 bytes */
    /* One I2_S token: the kernel runs over up to DECODE_RUN groups back to back, then their
     * epilogues. An epilogue between two groups' kernel calls cost the decode GEMV at K = 6912
     * ~20% of its rate from memory (Zen 4, one thread, 256 MB of copies: 2560x6912 in 179-181
     * against 156-158 us, 6912x2560 and 2560x2560 unchanged; 2026-12-05; cause not found: the
     * same kernel called back to back streams at the read rate). TQ formats keep group by
     * group: their epilogue reads a second stream (the block scales), and in runs their
     * K = 2560 shapes lost 5-10%. More tokens: group by group, in tiles of tokens. Each
     * group's epilogue is the same operations either way. */
    int run = n == 1 && fmt == BN_I2_S ? DECODE_RUN : 1;
    int32_t sums[BN_TILE_MAX_TOKENS * 16 * nsum] __attribute__((aligned(64)));
    for (int g0 = gr0; g0 < gr1; g0 += run) {
        int g1 = g0 + run < gr1 ? g0 + run : gr1;
        for (int t0 = 0; t0 < n; t0 += tile) {
            int nt = n - t0 < tile ? n - t0 : tile;
            size_t per_group = (size_t)nsum * nt * 16;  /* sums of one group */
            for (int gr = g0; gr < g1; gr++) {
                kt->ternary_rows16(codes + (size_t)gr * group_bytes, K, gps,
                                   q + (size_t)t0 * K, (size_t)K, nt,
                                   sums + (size_t)(gr - g0) * per_group);
            }
            for (int gr = g0; gr < g1; gr++) {
                group_epilogue(fmt, scales, gr, nsum, sums + (size_t)(gr - g0) * per_group, t0,
                               nt, ascale_t, asum_t, n, y, M, out_scale);
            }
        }
    }
}

/* Quantize tokens t0..t1-1 of x [n, K]: per-token int8 (I2_S) or Q8_K blocks, whose block
 * data goes straight to the transposed [block][token] layout the epilogues read. */
void quantize_tokens(const float *x, int n, int K, int per_token, int8_t *q, float *ascale,
                     int32_t *asum, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * K;
        int8_t *qt = q + (size_t)t * K;
        if (per_token) {
            act_quantize_per_token_i8(xt, 1, K, qt, ascale + t, asum + t);
        } else {
            int nb = K / 256;
            float d[nb];
            int32_t bs[nb];
            act_quantize_q8_k(xt, 1, K, qt, d, bs);
            for (int b = 0; b < nb; b++) {
                ascale[(size_t)b * n + t] = d[b];
                asum[(size_t)b * n + t] = bs[b];
            }
        }
    }
}

void ternary_units(const bn_kernels *kt, int fmt, const uint8_t *codes, const float *scales,
                   int u0, int u1, int K, const int8_t *q, const float *ascale_t,
                   const int32_t *asum_t, int n, float *y, int M, float out_scale)
{
    if (kt->row_group == 16) {
        ternary_row_groups(kt, fmt, codes, scales, u0, u1, K, q, ascale_t, asum_t, n, y, M,
                           out_scale);
    } else {
        int r0 = u0 * ROW_BLOCK;
        int r1 = u1 * ROW_BLOCK < M ? u1 * ROW_BLOCK : M;
        ternary_rows(kt, fmt, codes, scales, r0, r1, K, q, ascale_t, asum_t, n, y, M,
                     out_scale);
    }
}

int linear_ternary(const bn_kernels *kt, int fmt, const uint8_t *codes, const float *scales,
                   int M, int K, const float *x, int n, float *y, float out_scale, int nthreads)
{
    int per_token = fmt == BN_I2_S;
    if (K <= 0 || K % 128 || (!per_token && K % 256) || M <= 0 || n <= 0) {
        return -2;
    }
    if (fmt != BN_I2_S && fmt != BN_TQ2_0 && fmt != BN_TQ1_0) {
        return -2;
    }
    size_t nscale = per_token ? (size_t)n : (size_t)n * (K / 256);
    int8_t *q = alloc64((size_t)n * K);
    float *ascale = alloc64(nscale * sizeof(float));
    int32_t *asum = alloc64(nscale * sizeof(int32_t));
    if (!q || !ascale || !asum) {
        free(q);
        free(ascale);
        free(asum);
        return -1;
    }
    int nrb = (M + ROW_BLOCK - 1) / ROW_BLOCK;
    int ngroups = kt->row_group == 16 ? (M + 15) / 16 : 0;
    int group_chunk = n == 1 ? bn_stream_chunk(ngroups, nthreads) : n >= 8 ? 1 : 8 / n;
    /* Decode (n == 1): quantize on the calling thread, before the region, so the region holds
     * one worksharing loop and one barrier (its end). A decode token runs ~210 of these calls;
     * every extra barrier is a wait on the slowest thread, a scheduler slice when a vCPU is
     * taken by another process. */
    int serial_quantize = n < nthreads || n == 1;
    if (serial_quantize) {
        quantize_tokens(x, n, K, per_token, q, ascale, asum, 0, n);
    }
    /* one parallel region for quantize + matmul: thread start-up is paid once per call */
    #pragma omp parallel num_threads(nthreads)
    {
        if (!serial_quantize) {
            #pragma omp for schedule(static)
            for (int t = 0; t < n; t++) {
                quantize_tokens(x, n, K, per_token, q, ascale, asum, t, t + 1);
            }
        }
        if (ngroups) {
            /* chunks of 8 groups (128 rows) handed out as threads get free, as ggml's thread
             * pool does: when another process takes a vCPU, the running thread takes over the
             * stalled one's rows instead of waiting for them at the barrier. Quiet-machine
             * decode is the same as with a static split (23.6 tok/s at 2 threads either way,
             * 2026-11-23); the gain under load is the intent, not yet measured. With more
             * tokens a group is more work and the chunks shrink to one group from 8 tokens on:
             * a 640-row matmul is 5 chunks of 8, which 2 threads split 3:2. One token streams
             * its weights in longer runs (bn_stream_chunk). */
            int nchunks = (ngroups + group_chunk - 1) / group_chunk;
            #pragma omp for schedule(dynamic, 1)
            for (int c = 0; c < nchunks; c++) {
                ternary_row_groups(kt, fmt, codes, scales, c * group_chunk,
                                   bn_run_end(c, group_chunk, ngroups), K, q, ascale, asum, n,
                                   y, M, out_scale);
            }
        } else {
            #pragma omp for schedule(static)
            for (int rb = 0; rb < nrb; rb++) {
                int r0 = rb * ROW_BLOCK;
                int r1 = r0 + ROW_BLOCK < M ? r0 + ROW_BLOCK : M;
                ternary_rows(kt, fmt, codes, scales, r0, r1, K, q, ascale, asum, n, y, M,
                             out_scale);
            }
        }
    }
    free(q);
    free(ascale);
    free(asum);
    return 0;
}

static bn_dot_row_fn float_dot(const bn_kernels *kt, int fmt)
{
    switch (fmt) {
    case BN_F32:
        return kt->dot_f32;
    case BN_F16:
        return kt->dot_f16;
    case BN_BF16:
        return kt->dot_bf16;
    case BN_Q8_0:
        return kt->dot_q8_0;
    default:
        return NULL;
    }
}

/* Q8_K activations of tokens t0..t1-1 for the Q6_K head: for the per-row dot (pair32) the
 * pair sums 32*(q[2i]+q[2i+1]) that fold the -32 code offset out of the inner loop, for the
 * row-group kernel (qa) each token in the table's batched layout (q6_k_act, act_stride bytes a
 * token). */
static void quantize_q8_k_pairs(const bn_kernels *kt, const float *x, int t0, int t1, int K,
                                int8_t *q, float *dy, int16_t *pair32, uint8_t *qa,
                                size_t act_stride)
{
    int nb = K / 256;
    for (int t = t0; t < t1; t++) {
        int32_t bs[nb];
        int8_t *qt = q + (size_t)t * K;
        act_quantize_q8_k(x + (size_t)t * K, 1, K, qt, dy + (size_t)t * nb, bs);
        if (pair32) {
            for (int i = 0; i < K / 2; i++) {
                pair32[(size_t)t * (K / 2) + i] = (int16_t)(32 * (qt[2 * i] + qt[2 * i + 1]));
            }
        }
        if (qa) {
            kt->q6_k_act(qt, K, qa + (size_t)t * act_stride);
        }
    }
}

/* Q6_K x Q8_K (backend.py linear_float): activations quantized per 256-block like the TQ path,
 * then exact integer block sums against the 6-bit codes; the integer-SIMD path is also the
 * fast one (the head is bandwidth-bound, not conversion-bound). One token runs the table's
 * per-row dot where it has one, else its row-group kernel (q6_k_rows with one token: the
 * same bits either way, bitnet_cpu.h). */
static int linear_q6_k(const bn_kernels *kt, const uint8_t *w, size_t row_bytes, int M, int K,
                       const float *x, int n, float *y, float out_scale, int nthreads)
{
    if (K % 256) {
        return -2;
    }
    int nb = K / 256;
    int per_row = n == 1 && kt->dot_q6_k_q8_k && !kt->q6_k_grouped;
    int8_t *q = alloc64((size_t)n * K);
    float *dy = alloc64((size_t)n * nb * sizeof(float));
    /* per-row dot: the pair sums; row groups: the activations in the table's batched layout */
    int16_t *pair32 = per_row ? alloc64((size_t)(K / 2) * sizeof(int16_t)) : NULL;
    size_t act_stride = per_row ? 0 : (size_t)nb * (size_t)kt->q6_k_act_block;
    uint8_t *qa = per_row ? NULL : alloc64((size_t)n * act_stride);
    if (!q || !dy || (per_row && !pair32) || (!per_row && !qa)) {
        free(q);
        free(dy);
        free(pair32);
        free(qa);
        return -1;
    }
    /* decode: quantize on the calling thread (one barrier less per call, as linear_ternary) */
    int serial_quantize = n < nthreads || n == 1;
    if (serial_quantize) {
        quantize_q8_k_pairs(kt, x, 0, n, K, q, dy, pair32, qa, act_stride);
    }
    #pragma omp parallel num_threads(nthreads)
    {
        if (!serial_quantize) {
            #pragma omp for schedule(static)
            for (int t = 0; t < n; t++) {
                quantize_q8_k_pairs(kt, x, t, t + 1, K, q, dy, pair32, qa, act_stride);
            }
        }
        if (per_row) {
            /* decode: one streaming pass, unpack fused into the dot (bandwidth-bound).
             * dynamic chunks of 256 rows (~540 KB): see linear_ternary */
            #pragma omp for schedule(dynamic, 256)
            for (int r = 0; r < M; r++) {
                float v = kt->dot_q6_k_q8_k(w + (size_t)r * row_bytes, q, pair32, dy, K);
                y[r] = out_scale != 1.0f ? v * out_scale : v;
            }
        } else {
            /* groups of BN_Q6_K_ROWS rows, each group's codes unpacked once per block and used
             * for every token of the call (up to BN_Q6_K_TOKENS at a time, so the kernels'
             * scratch stays fixed). Dynamic chunks of 16 groups (256 rows): see
             * linear_ternary. Same integer block sums and epilogue as the per-row dot, so a
             * token's row equals the one it gets alone. */
            int ngroups = (M + BN_Q6_K_ROWS - 1) / BN_Q6_K_ROWS;
            #pragma omp for schedule(dynamic, 16)
            for (int g = 0; g < ngroups; g++) {
                int r0 = g * BN_Q6_K_ROWS;
                int nr = M - r0 < BN_Q6_K_ROWS ? M - r0 : BN_Q6_K_ROWS;
                for (int t0 = 0; t0 < n; t0 += BN_Q6_K_TOKENS) {
                    int nt = n - t0 < BN_Q6_K_TOKENS ? n - t0 : BN_Q6_K_TOKENS;
                    kt->q6_k_rows(w + (size_t)r0 * row_bytes, row_bytes, nr, K,
                                  qa + (size_t)t0 * act_stride, act_stride, dy + (size_t)t0 * nb,
                                  nt, y + (size_t)t0 * M + r0, (size_t)M, out_scale);
                }
            }
        }
    }
    free(q);
    free(dy);
    free(pair32);
    free(qa);
    return 0;
}

int linear_float(const bn_kernels *kt, int fmt, const uint8_t *w, size_t row_bytes, int M, int K,
                 const float *x, int n, float *y, float out_scale, int nthreads)
{
    if (fmt == BN_Q6_K) {
        return linear_q6_k(kt, w, row_bytes, M, K, x, n, y, out_scale, nthreads);
    }
    bn_dot_row_fn dot = float_dot(kt, fmt);
    if (!dot || M <= 0 || K <= 0 || n <= 0) {
        return -2;
    }
    if (fmt == BN_F16 && kt->f16_rows && K <= 1024) {
        /* Short rows (a small model's head): the tiled kernel, whose per-row reductions no
         * longer dominate and whose conversions serve four tokens (a demo-model head at n = 8:
         * 501 -> ~200 us, n = 1 unchanged). Longer rows keep the one-row dot below, which
         * streams memory faster (tiles of several 5 KB rows read 2560-wide F16 heads at ~16
         * GB/s instead of ~24). K picks the kernel, never n, so every batch size of one weight
         * runs the same arithmetic. Row blocks of 64 handed out dynamically. */
        int nblocks = (M + 63) / 64;
        #pragma omp parallel for schedule(dynamic, 4) num_threads(nthreads)
        for (int b = 0; b < nblocks; b++) {
            int r1 = 64 * b + 64 < M ? 64 * b + 64 : M;
            kt->f16_rows(w, row_bytes, 64 * b, r1, x, n, K, y, M);
            for (int t = 0; out_scale != 1.0f && t < n; t++) {
                for (int r = 64 * b; r < r1; r++) {
                    y[(size_t)t * M + r] *= out_scale;
                }
            }
        }
        return 0;
    }
    /* row-parallel; for n > 1 each weight row is reused from L1 for every token */
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int r = 0; r < M; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        for (int t = 0; t < n; t++) {
            float v = dot(row, x + (size_t)t * K, K);
            if (out_scale != 1.0f) {
                v = v * out_scale;
            }
            y[(size_t)t * M + r] = v;
        }
    }
    return 0;
}
