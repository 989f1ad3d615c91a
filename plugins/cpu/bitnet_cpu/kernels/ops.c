/* ops.c: the small ops of the forward pass (rmsnorm, rope, attention, gating, add) in C.
 * They are O(n*K) or O(n*ctx*D) and run well from auto-vectorized C; the numerics follow
 * backend.py (float64 where the reference uses it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet_cpu.h"

/* ggml's order (as the reference): f32 squares summed in double, the mean rounded to f32,
 * scale = 1 / sqrt(mean + eps) in f32, then (x * scale) * w. The double sum runs in 8
 * independent partial sums (vectorizable; numpy's own sum is pairwise, not sequential, so
 * neither order is "the" order: the double result differs from either by ~1e-16 relative, far
 * below the f32 rounding of the mean). Each partial sum is a chain of K/8 dependent adds, so a
 * prompt's rows are summed RMS_ROWS at a time, their chains side by side (each row's sums in
 * its own order, the same bits as one row alone): 128 rows of 2560, one Zen 4 thread,
 * 0.124 -> 0.07 ms. */
#define RMS_ROWS 4

typedef double bn_v8d __attribute__((vector_size(64)));
typedef float bn_v8f_u __attribute__((vector_size(32), aligned(4), may_alias));

/* sum of squares of rows 0..rows-1 of x (row stride `stride`), rows <= RMS_ROWS; lane j of a
 * row's vector is its partial sum j (GCC vectors: written over arrays, GCC kept it scalar) */
static inline __attribute__((always_inline)) void
square_sums(const float *x, size_t stride, int rows, int K, double *ss)
{
    bn_v8d part[RMS_ROWS];
    for (int r = 0; r < rows; r++) {
        part[r] = (bn_v8d){0.0};
    }
    int i = 0;
    for (; i + 8 <= K; i += 8) {
        for (int r = 0; r < rows; r++) {
            bn_v8f_u v = *(const bn_v8f_u *)(x + r * stride + i);
            part[r] += __builtin_convertvector(v * v, bn_v8d);
        }
    }
    for (int r = 0; r < rows; r++) {
        double p[8];
        memcpy(p, &part[r], sizeof p);
        for (int t = i; t < K; t++) {
            float v = x[r * stride + t];
            p[0] += (double)(v * v);
        }
        ss[r] = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    }
}

static inline __attribute__((always_inline)) void
scale_row(const float *xt, const float *w, int K, float eps, double ss, float *yt)
{
    float mean = (float)(ss / K);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int j = 0; j < K; j++) {
        yt[j] = (xt[j] * scale) * w[j];
    }
}

BN_WIDE
void rmsnorm_row_f32(const float *xt, const float *w, int K, float eps, float *yt)
{
    double ss;
    square_sums(xt, 0, 1, K, &ss);
    scale_row(xt, w, K, eps, ss, yt);
}

/* RMS_ROWS consecutive rows of x [.., K] */
BN_WIDE
static void rmsnorm_rows_f32(const float *x, const float *w, int K, float eps, float *y)
{
    double ss[RMS_ROWS];
    square_sums(x, (size_t)K, RMS_ROWS, K, ss);
    for (int r = 0; r < RMS_ROWS; r++) {
        scale_row(x + (size_t)r * K, w, K, eps, ss[r], y + (size_t)r * K);
    }
}

void rmsnorm_f32(const float *x, const float *w, int n, int K, float eps, float *y, int nthreads)
{
    /* decode (n == 1) stays on the calling thread: a parallel region costs more than 2560
     * multiply-adds */
    int groups = (n + RMS_ROWS - 1) / RMS_ROWS;
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (n > 1)
    for (int g = 0; g < groups; g++) {
        int t = g * RMS_ROWS;
        if (n - t >= RMS_ROWS) {
            rmsnorm_rows_f32(x + (size_t)t * K, w, K, eps, y + (size_t)t * K);
            continue;
        }
        for (; t < n; t++) {
            rmsnorm_row_f32(x + (size_t)t * K, w, K, eps, y + (size_t)t * K);
        }
    }
}

/* cos/sin of one position's angles pos * theta^(-2i/D), i < D/2, in double like the reference
 * (pow/cos/sin are ~50 ns each). */
static void rope_angles(int pos, int head_dim, double theta, double *cs, double *sn)
{
    double p = (double)pos;
    for (int i = 0; i < head_dim / 2; i++) {
        double angle = p * pow(theta, -2.0 * i / head_dim);
        cs[i] = cos(angle);
        sn[i] = sin(angle);
    }
}

/* The cos/sin tables of the positions of the last call, kept per thread: q and k of every layer
 * rotate at the same positions, so a decode step asks for the same table 2 * n_layers times and
 * a prompt for the same n tables (computed once: a 128-token prompt of the 2B shape spent 20 ms
 * on one thread recomputing them, ~1.2% of it). Rows [pos - lo] of cs and sn, half values each. */
static _Thread_local struct {
    int lo, count, head_dim;
    double theta;
    size_t cap;  /* doubles allocated in each of cs, sn */
    double *cs, *sn;
} rope_table;

/* The table rows of positions pos .. pos+n-1 (NULL when they cannot be allocated). */
static const double *rope_table_for(int pos, int n, int head_dim, double theta)
{
    int half = head_dim / 2;
    if (rope_table.cs && rope_table.head_dim == head_dim && rope_table.theta == theta &&
        pos >= rope_table.lo && pos + n <= rope_table.lo + rope_table.count) {
        return rope_table.cs;
    }
    size_t need = (size_t)n * half;
    if (need > rope_table.cap) {
        free(rope_table.cs);
        free(rope_table.sn);
        rope_table.cs = malloc(need * sizeof(double));
        rope_table.sn = malloc(need * sizeof(double));
        rope_table.cap = rope_table.cs && rope_table.sn ? need : 0;
        if (!rope_table.cap) {
            free(rope_table.cs);
            free(rope_table.sn);
            rope_table.cs = rope_table.sn = NULL;
            return NULL;
        }
    }
    for (int t = 0; t < n; t++) {
        rope_angles(pos + t, head_dim, theta, rope_table.cs + (size_t)t * half,
                    rope_table.sn + (size_t)t * half);
    }
    rope_table.lo = pos;
    rope_table.count = n;
    rope_table.head_dim = head_dim;
    rope_table.theta = theta;
    return rope_table.cs;
}

/* v[i], v[i + half] of every head of one token rotated by the angles cs, sn (double, like the
 * reference; no FMA contraction, so the same bits in every clone) */
BN_WIDE
static void rope_rotate(float *x, int n_heads, int head_dim, const double *cs, const double *sn)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            double a = v[i];
            double b = v[i + half];
            v[i] = (float)(a * cs[i] - b * sn[i]);
            v[i + half] = (float)(a * sn[i] + b * cs[i]);
        }
    }
}

void rope_neox_f32(float *x, int n, int n_heads, int head_dim, int pos, double theta)
{
    int half = head_dim / 2;
    if (half > 512) {
        return;  /* checked by the caller */
    }
    if (rope_table_for(pos, n, head_dim, theta)) {
        size_t row = (size_t)(pos - rope_table.lo) * half;
        for (int t = 0; t < n; t++) {
            rope_rotate(x + (size_t)t * n_heads * head_dim, n_heads, head_dim,
                        rope_table.cs + row + (size_t)t * half,
                        rope_table.sn + row + (size_t)t * half);
        }
        return;
    }
    /* no memory for the table: the same angles, one position at a time */
    double cs[512], sn[512];
    for (int t = 0; t < n; t++) {
        rope_angles(pos + t, head_dim, theta, cs, sn);
        rope_rotate(x + (size_t)t * n_heads * head_dim, n_heads, head_dim, cs, sn);
    }
}

/* 8 and 4 floats as GCC vectors (bn_v16f, bn_v16i: bitnet_cpu.h) */
typedef float bn_v8f __attribute__((vector_size(32)));
typedef float bn_v4f __attribute__((vector_size(16)));

/* The elementwise ops run over [n, F] activations: 884K values per call in a 128-token prompt
 * of the 2B shape. Wide vectors (the AVX-512 / AVX2 clones) and, for a prompt, both threads;
 * a decode row (a few thousand values) stays on the calling thread. */
#define BN_ELEMENTWISE_PARALLEL 65536

BN_WIDE
static void relu2_mul_chunk(const float *g, const float *u, size_t count, float *y)
{
    for (size_t i = 0; i < count; i++) {
        float r = g[i] > 0.0f ? g[i] : 0.0f;
        y[i] = (r * r) * u[i];
    }
}

/* x limited to [lo, hi] lane by lane. C has no ?: on vectors, and GCC scalarized the vector
 * comparisons here, so the masks come from the sign bits of the differences. */
static inline __attribute__((always_inline)) bn_v16f clamp_v16(bn_v16f x, float lo, float hi)
{
    bn_v16f vlo = (bn_v16f){0.0f} + lo;
    bn_v16f vhi = (bn_v16f){0.0f} + hi;
    bn_v16i below = (bn_v16i)(x - vlo) >> 31;  /* all ones where x < lo */
    bn_v16i above = (bn_v16i)(vhi - x) >> 31;  /* all ones where x > hi */
    bn_v16i keep = ~(below | above);
    return (bn_v16f)(((bn_v16i)x & keep) | ((bn_v16i)vlo & below) | ((bn_v16i)vhi & above));
}

/* e^x for 16 lanes, x in [-87.3, 88.7] (callers clamp): x = n ln2 + r with |r| <= ln2 / 2
 * (Cody-Waite, ln2 in two parts), e^r by its degree-6 Taylor polynomial (error < 2e-7
 * relative, a few ulp), 2^n built in the exponent bits. Branch-free, so the loop vectorizes;
 * libm's expf is a scalar call per value (silu_mul took 6 ns a value). */
static inline __attribute__((always_inline)) bn_v16f exp_v16(bn_v16f x)
{
    const bn_v16f shifter = (bn_v16f){0.0f} + 12582912.0f;  /* 1.5 * 2^23: rounds to integer */
    bn_v16f t = x * 1.44269504f + shifter;
    bn_v16f n = t - shifter;
    bn_v16f r = x - n * 0.693145752f - n * 1.42860677e-06f;
    bn_v16f p = (bn_v16f){0.0f} + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    bn_v16i bits = ((bn_v16i)t - 0x4B400000 + 127) << 23;  /* 2^n */
    return p * (bn_v16f)bits;
}

BN_WIDE
static void silu_mul_chunk(const float *g, const float *u, size_t count, float *y)
{
    size_t vec = count - count % 16;
    for (size_t i = 0; i < vec; i += 16) {
        bn_v16f gv = *(const bn_v16f *)(g + i);
        bn_v16f sig = 1.0f / (1.0f + exp_v16(clamp_v16(-gv, -87.3f, 88.7f)));
        *(bn_v16f *)(y + i) = (gv * sig) * *(const bn_v16f *)(u + i);
    }
    for (size_t i = vec; i < count; i++) {
        float sig = 1.0f / (1.0f + expf(-g[i]));
        y[i] = (g[i] * sig) * u[i];
    }
}

BN_WIDE
static void add_chunk(const float *a, const float *b, size_t count, float *y)
{
    for (size_t i = 0; i < count; i++) {
        y[i] = a[i] + b[i];
    }
}

/* chunks of 16K values (a multiple of 16) over the threads; the chunk kernels carry the
 * ISA clones (kept outside the OpenMP region, whose outlined body would not be cloned) */
#define BN_CHUNK 16384
typedef void (*bn_chunk_fn)(const float *a, const float *b, size_t count, float *y);

static void elementwise(bn_chunk_fn chunk, const float *a, const float *b, size_t count,
                        float *y, int nthreads)
{
    size_t nchunks = (count + BN_CHUNK - 1) / BN_CHUNK;
    #pragma omp parallel for schedule(static) num_threads(nthreads) \
        if (nthreads > 1 && count >= BN_ELEMENTWISE_PARALLEL)
    for (size_t c = 0; c < nchunks; c++) {
        size_t at = c * BN_CHUNK;
        chunk(a + at, b + at, count - at < BN_CHUNK ? count - at : BN_CHUNK, y + at);
    }
}

void relu2_mul_f32(const float *g, const float *u, size_t count, float *y, int nthreads)
{
    elementwise(relu2_mul_chunk, g, u, count, y, nthreads);
}

void silu_mul_f32(const float *g, const float *u, size_t count, float *y, int nthreads)
{
    elementwise(silu_mul_chunk, g, u, count, y, nthreads);
}

void add_f32(const float *a, const float *b, size_t count, float *y, int nthreads)
{
    elementwise(add_chunk, a, b, count, y, nthreads);
}

void gate_row_f32(int silu, const float *g, const float *u, size_t count, float *y)
{
    (silu ? silu_mul_chunk : relu2_mul_chunk)(g, u, count, y);
}

void add_row_f32(const float *a, const float *b, size_t count, float *y)
{
    add_chunk(a, b, count, y);
}

/* Scratch that outlives a call: the widened K/V planes. A fresh malloc of a few hundred KB per
 * call is an mmap + page faults + munmap every layer of every token; one buffer per calling
 * thread, grown when a longer context needs it, costs nothing after the first token. Aligned
 * to 64 bytes: malloc's 16 left where a plane started to chance (the heap's state), and with
 * it whether every 16-float load of a widened row split two cache lines (the same attention
 * call took 5-16 % longer or shorter from one process to the next). */
static _Thread_local float *attn_scratch;
static _Thread_local size_t attn_scratch_floats;

static float *attention_scratch(size_t floats)
{
    if (floats > attn_scratch_floats) {
        free(attn_scratch);
        attn_scratch = aligned_alloc(64, (floats * sizeof(float) + 63) & ~(size_t)63);
        attn_scratch_floats = attn_scratch ? floats : 0;
    }
    return attn_scratch;
}


/* nv x 16 columns of softmax(scores) @ V: out = sum_j (scores[j] / sum) * v[j], the columns
 * held in registers across all rows (accumulating into memory made every row wait on the
 * previous row's store). */
static inline __attribute__((always_inline)) void
weighted_rows(const float *restrict v, const float *restrict scores, float sum, int last,
              int stride, float *restrict out, const int nv)
{
    bn_v16f acc[8];
    for (int u = 0; u < nv; u++) {
        acc[u] = (bn_v16f){0.0f};
    }
    for (int j = 0; j <= last; j++) {
        float p = scores[j] / sum;
        const float *vr = v + (size_t)j * stride;
        for (int u = 0; u < nv; u++) {
            acc[u] += p * *(const bn_v16f *)(vr + 16 * u);
        }
    }
    for (int u = 0; u < nv; u++) {
        *(bn_v16f *)(out + 16 * u) = acc[u];
    }
}

/* One (token, head) pair: scores over positions 0..last -> max-subtracted softmax -> weighted
 * sum of V into o. q.k runs as 16 independent lanes and one final reduction: a single chain of
 * head_dim dependent adds is latency-bound (~4 cycles per add), and the compiler's own
 * vectorization of a 16-slot partial-sum array spills and permutes (the contract gives
 * attention a tolerance, not an order). This file is portable C, so the AVX-512 / AVX2 clones
 * (chosen by the loader from the CPU's real features) carry the wide vectors. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void attend_one(const float *restrict qh, const float *restrict kh,
                       const float *restrict vh, int last, int head_dim, float scale,
                       float *restrict scores, float *restrict o)
{
    int vec = head_dim - head_dim % 16;
    float mx = -INFINITY;
    for (int j = 0; j <= last; j++) {
        const float *kr = kh + (size_t)j * head_dim;
        /* four independent chains: one chain of D/16 dependent adds per row was latency-bound */
        bn_v16f a0 = {0.0f}, a1 = {0.0f}, a2 = {0.0f}, a3 = {0.0f};
        int d = 0;
        for (; d + 64 <= vec; d += 64) {
            a0 += *(const bn_v16f *)(qh + d) * *(const bn_v16f *)(kr + d);
            a1 += *(const bn_v16f *)(qh + d + 16) * *(const bn_v16f *)(kr + d + 16);
            a2 += *(const bn_v16f *)(qh + d + 32) * *(const bn_v16f *)(kr + d + 32);
            a3 += *(const bn_v16f *)(qh + d + 48) * *(const bn_v16f *)(kr + d + 48);
        }
        for (; d < vec; d += 16) {
            a0 += *(const bn_v16f *)(qh + d) * *(const bn_v16f *)(kr + d);
        }
        bn_v16f acc = (a0 + a1) + (a2 + a3);
        /* a tree of halves, not 16 dependent adds (the latency of those was most of a short
         * head's time) */
        bn_v8f a8 = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(acc, acc, 8, 9, 10, 11, 12, 13, 14, 15);
        bn_v4f a4 = __builtin_shufflevector(a8, a8, 0, 1, 2, 3) +
                    __builtin_shufflevector(a8, a8, 4, 5, 6, 7);
        float dot = (a4[0] + a4[2]) + (a4[1] + a4[3]);
        for (int d = vec; d < head_dim; d++) {
            dot += qh[d] * kr[d];
        }
        scores[j] = dot * scale;
        mx = scores[j] > mx ? scores[j] : mx;
    }
    /* softmax numerators 16 at a time with the vector exp (libm's scalar expf was a fifth of a
     * prompt's attention) */
    bn_v16f vsum = {0.0f};
    int j = 0;
    for (; j + 16 <= last + 1; j += 16) {
        bn_v16f e = exp_v16(clamp_v16(*(bn_v16f *)(scores + j) - mx, -87.3f, 88.7f));
        *(bn_v16f *)(scores + j) = e;
        vsum += e;
    }
    bn_v8f s8 = __builtin_shufflevector(vsum, vsum, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(vsum, vsum, 8, 9, 10, 11, 12, 13, 14, 15);
    bn_v4f s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) +
                __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
    float sum = (s4[0] + s4[2]) + (s4[1] + s4[3]);
    for (; j <= last; j++) {
        scores[j] = expf(scores[j] - mx);
        sum += scores[j];
    }
    int d0 = 0;
    for (; d0 + 128 <= vec; d0 += 128) {
        weighted_rows(vh + d0, scores, sum, last, head_dim, o + d0, 8);
    }
    for (; d0 + 64 <= vec; d0 += 64) {
        weighted_rows(vh + d0, scores, sum, last, head_dim, o + d0, 4);
    }
    for (; d0 < vec; d0 += 16) {
        weighted_rows(vh + d0, scores, sum, last, head_dim, o + d0, 1);
    }
    for (int d = vec; d < head_dim; d++) {
        float a = 0.0f;
        for (int j = 0; j <= last; j++) {
            a += (scores[j] / sum) * vh[(size_t)j * head_dim + d];
        }
        o[d] = a;
    }
}

/* The cache row of position p: through the block table (bitnet.hal.kv_blocks), or p itself
 * when table is NULL (a cache used whole by one sequence). */
static inline size_t kv_row(const int32_t *table, int p)
{
    if (!table) {
        return (size_t)p;
    }
    return (size_t)table[p / BN_KV_BLOCK] * BN_KV_BLOCK + (size_t)(p % BN_KV_BLOCK);
}

/* src [n][kvw] (positions pos..pos+n-1) stored as f16 at their cache rows: one conversion per
 * run of positions inside one block, one for the whole call without a table (the conversion is
 * per value, so the runs never change the bits). */
static void store_rows(const bn_kernels *kt, const float *src, uint16_t *cache,
                       const int32_t *table, int pos, int n, int kvw)
{
    for (int t = 0; t < n;) {
        int p = pos + t;
        int run = table ? BN_KV_BLOCK - p % BN_KV_BLOCK : n - t;
        run = run < n - t ? run : n - t;
        kt->f32_to_f16_row(src + (size_t)t * kvw, cache + kv_row(table, p) * kvw,
                           run * kvw);
        t += run;
    }
}

/* Tokens t0..t1-1 of a call (at positions pos + t; their K/V already stored) against KV head
 * kvh: that head's cached positions 0..pos+t1-1 (never the whole n_ctx) are widened to f32 once
 * (shared by the H/Hkv query heads that read them, with the table's F16C/NEON conversion), in
 * this thread's scratch (an L2-sized plane, where widening every head at once spilled to memory:
 * 5 MB at 1000 positions of a 2B model), then every (token, head) pair runs scores ->
 * max-subtracted softmax -> weighted sum of V. The widening gathers row by row, so a block
 * table (NULL: position p is row p) costs one lookup per block of BN_KV_BLOCK rows, and the
 * plane it fills, hence every result, is the same as from a contiguous cache holding the same
 * values. -> 0, or -1 when the scratch could not be allocated. */
static int attend_kv_head(const bn_kernels *kt, const float *q, const uint16_t *kcache,
                          const uint16_t *vcache, const int32_t *table, int pos, int t0, int t1,
                          int kvh, int n_heads, int n_kv_heads, int head_dim, float *out)
{
    int kvw = n_kv_heads * head_dim;
    int group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    int rows = pos + t1;  /* causal: these tokens see positions 0..pos+t1-1 */
    float *kf = attention_scratch((2 * (size_t)head_dim + 1) * rows);
    if (!kf) {
        return -1;
    }
    float *vf = kf + (size_t)rows * head_dim;
    float *scores = vf + (size_t)rows * head_dim;
    for (int j0 = 0; j0 < rows; j0 += BN_KV_BLOCK) {
        size_t row0 = kv_row(table, j0);  /* a block's positions are consecutive rows */
        int nrow = rows - j0 < BN_KV_BLOCK ? rows - j0 : BN_KV_BLOCK;
        for (int i = 0; i < nrow; i++) {
            size_t src = (row0 + i) * kvw + (size_t)kvh * head_dim;
            size_t dst = (size_t)(j0 + i) * head_dim;
            kt->f16_to_f32_row(kcache + src, kf + dst, head_dim);
            kt->f16_to_f32_row(vcache + src, vf + dst, head_dim);
        }
    }
    for (int t = t0; t < t1; t++) {
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            size_t th = (size_t)t * n_heads + h;
            /* ggml's F16 dot rounds q to f16 before q.K (the contract says so too);
             * head_dim <= 1024 is checked by the caller (backend.py) */
            float qbuf[1024];
            uint16_t qh[1024];
            kt->f32_to_f16_row(q + th * head_dim, qh, head_dim);
            kt->f16_to_f32_row(qh, qbuf, head_dim);
            attend_one(qbuf, kf, vf, pos + t, head_dim, scale, scores, out + th * head_dim);
        }
    }
    return 0;
}

/* Attention over the f16 cache: k and v stored at positions pos.. (through the table), then
 * work units of one KV head x a chunk of tokens (attend_kv_head), so a prefill splits evenly
 * over threads. Small calls (a decode step at a short context) stay on the calling thread: a
 * parallel region and its barriers cost more than the work there, and on a contended machine
 * each barrier can wait a whole scheduler slice. */
int attention_f16kv(const bn_kernels *kt, const float *q, const float *k, const float *v,
                    uint16_t *kcache, uint16_t *vcache, const int32_t *table, int n, int pos,
                    int n_heads, int n_kv_heads, int head_dim, float *out, int nthreads)
{
    int kvw = n_kv_heads * head_dim;
    int ctx = pos + n;
    store_rows(kt, k, kcache, table, pos, n, kvw);
    store_rows(kt, v, vcache, table, pos, n, kvw);
    /* multiply-adds of the call (q.K and p.V): below ~1M a single thread wins */
    double work = 2.0 * n * (double)n_heads * ctx * head_dim;
    int parallel = nthreads > 1 && work >= 1048576.0;
    int tchunk = n <= 16 ? n : 16;
    int nchunks = (n + tchunk - 1) / tchunk;
    int failed = 0;
    #pragma omp parallel num_threads(nthreads) if (parallel)
    {
        #pragma omp for schedule(dynamic, 1)
        for (int unit = 0; unit < n_kv_heads * nchunks; unit++) {
            int t0 = (unit % nchunks) * tchunk;
            int t1 = t0 + tchunk < n ? t0 + tchunk : n;
            if (attend_kv_head(kt, q, kcache, vcache, table, pos, t0, t1, unit / nchunks,
                               n_heads, n_kv_heads, head_dim, out)) {
                #pragma omp atomic write
                failed = 1;  /* out of memory: the caller gets -1, never unwritten values */
            }
        }
    }
    return failed ? -1 : 0;
}

int attention_decode_kv_head(const bn_kernels *kt, float *q, float *k, const float *v,
                              uint16_t *kcache, uint16_t *vcache, const int32_t *table, int pos,
                              int kvh, int n_heads, int n_kv_heads, int head_dim, double theta,
                              float *out)
{
    int group = n_heads / n_kv_heads;
    size_t at = kv_row(table, pos) * n_kv_heads * head_dim + (size_t)kvh * head_dim;
    rope_neox_f32(k + (size_t)kvh * head_dim, 1, 1, head_dim, pos, theta);
    rope_neox_f32(q + (size_t)kvh * group * head_dim, 1, group, head_dim, pos, theta);
    kt->f32_to_f16_row(k + (size_t)kvh * head_dim, kcache + at, head_dim);
    kt->f32_to_f16_row(v + (size_t)kvh * head_dim, vcache + at, head_dim);
    return attend_kv_head(kt, q, kcache, vcache, table, pos, 0, 1, kvh, n_heads, n_kv_heads,
                          head_dim, out);
}

/* The rows are independent sequences of one pool, so this is rope + attention for each in turn
 * (in row order, as the contract composes it). What it saves is the per-sequence trip through
 * Python (three slices, two ropes, an attention and a concatenation per layer), which on a small
 * model costs more than the arithmetic. */
int attention_rows_f16kv(const bn_kernels *kt, float *q, float *k, const float *v,
                         uint16_t *kcache, uint16_t *vcache, const int32_t *positions,
                         const int32_t *tables, int table_len, int B, int n_heads,
                         int n_kv_heads, int head_dim, double theta, float *out, int nthreads)
{
    size_t qw = (size_t)n_heads * head_dim;
    size_t kvw = (size_t)n_kv_heads * head_dim;
    for (int r = 0; r < B; r++) {
        rope_neox_f32(q + r * qw, 1, n_heads, head_dim, positions[r], theta);
        rope_neox_f32(k + r * kvw, 1, n_kv_heads, head_dim, positions[r], theta);
        if (attention_f16kv(kt, q + r * qw, k + r * kvw, v + r * kvw, kcache, vcache,
                            tables + (size_t)r * table_len, 1, positions[r], n_heads,
                            n_kv_heads, head_dim, out + r * qw, nthreads)) {
            return -1;
        }
    }
    return 0;
}

/* ---- the read-bandwidth probe (benchmarks/compare_peers.py) ---- */

typedef uint64_t bn_v8u __attribute__((vector_size(64), aligned(64), may_alias));

BN_WIDE
static uint64_t xor_bytes(const uint8_t *p, size_t n)
{
    /* four independent 64-byte streams of loads, folded by xor (no arithmetic to wait on) */
    bn_v8u a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        a0 ^= *(const bn_v8u *)(p + i);
        a1 ^= *(const bn_v8u *)(p + i + 64);
        a2 ^= *(const bn_v8u *)(p + i + 128);
        a3 ^= *(const bn_v8u *)(p + i + 192);
    }
    bn_v8u a = (a0 ^ a1) ^ (a2 ^ a3);
    uint64_t x = 0;
    for (int k = 0; k < 8; k++) {
        x ^= a[k];
    }
    for (; i < n; i++) {
        x ^= p[i];
    }
    return x;
}

uint64_t stream_read(const uint8_t *data, size_t n, int nthreads)
{
    /* each thread reads one contiguous slice front to back, as the matmuls stream their rows */
    uint64_t x = 0;
    size_t per = (n / (size_t)nthreads) & ~(size_t)255;
    #pragma omp parallel for schedule(static) num_threads(nthreads) reduction(^ : x)
    for (int s = 0; s < nthreads; s++) {
        size_t at = per * (size_t)s;
        x ^= xor_bytes(data + at, s == nthreads - 1 ? n - at : per);
    }
    return x;
}
