/* ops.c: the small ops of the forward pass (rmsnorm, rope, attention, gating, add) in C.
 * They are O(n*K) or O(n*ctx*D) and run well from auto-vectorized C; the numerics follow
 * backend.py (float64 where the reference uses it). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet_cpu.h"

void rmsnorm_f32(const float *x, const float *w, int n, int K, float eps, float *y, int nthreads)
{
    /* ggml's order (as the reference): f32 squares summed in double, the mean rounded to f32,
     * scale = 1 / sqrt(mean + eps) in f32, then (x * scale) * w. The double sum runs in 8
     * independent partial sums (vectorizable; numpy's own sum is pairwise, not sequential,
     * so neither order is "the" order: the double result differs from either by ~1e-16
     * relative, far below the f32 rounding of the mean). Decode (n == 1) stays on the
     * calling thread: a parallel region costs more than 2560 multiply-adds. */
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (n > 1)
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * K;
        float *yt = y + (size_t)t * K;
        double part[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
        int i = 0;
        for (; i + 8 <= K; i += 8) {
            for (int j = 0; j < 8; j++) {
                part[j] += (double)(xt[i + j] * xt[i + j]);
            }
        }
        for (; i < K; i++) {
            part[0] += (double)(xt[i] * xt[i]);
        }
        double ss = ((part[0] + part[1]) + (part[2] + part[3])) +
                    ((part[4] + part[5]) + (part[6] + part[7]));
        float mean = (float)(ss / K);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int j = 0; j < K; j++) {
            yt[j] = (xt[j] * scale) * w[j];
        }
    }
}

/* The cos/sin table of one position: q and k of every layer rotate at the same position, so
 * a decode step asks for the same table 2 * n_layers times; it is computed once and kept per
 * thread (pow/cos/sin in double are ~50 ns each, ~1 ms per token if recomputed). */
static _Thread_local struct {
    int valid;
    int pos;
    int head_dim;
    double theta;
    double cs[512];
    double sn[512];
} rope_table;

static void rope_table_for(int pos, int head_dim, double theta)
{
    if (rope_table.valid && rope_table.pos == pos && rope_table.head_dim == head_dim &&
        rope_table.theta == theta) {
        return;
    }
    int half = head_dim / 2;
    double p = (double)pos;
    for (int i = 0; i < half; i++) {
        double angle = p * pow(theta, -2.0 * i / head_dim);
        rope_table.cs[i] = cos(angle);
        rope_table.sn[i] = sin(angle);
    }
    rope_table.valid = 1;
    rope_table.pos = pos;
    rope_table.head_dim = head_dim;
    rope_table.theta = theta;
}

void rope_neox_f32(float *x, int n, int n_heads, int head_dim, int pos, double theta)
{
    /* angles and the rotation in float64 like the reference */
    int half = head_dim / 2;
    if (half > 512) {
        return;  /* checked by the caller */
    }
    for (int t = 0; t < n; t++) {
        rope_table_for(pos + t, head_dim, theta);
        const double *cs = rope_table.cs;
        const double *sn = rope_table.sn;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                double a = v[i];
                double b = v[i + half];
                v[i] = (float)(a * cs[i] - b * sn[i]);
                v[i + half] = (float)(a * sn[i] + b * cs[i]);
            }
        }
    }
}

void relu2_mul_f32(const float *g, const float *u, size_t count, float *y)
{
    for (size_t i = 0; i < count; i++) {
        float r = g[i] > 0.0f ? g[i] : 0.0f;
        y[i] = (r * r) * u[i];
    }
}

void silu_mul_f32(const float *g, const float *u, size_t count, float *y)
{
    for (size_t i = 0; i < count; i++) {
        float sig = 1.0f / (1.0f + expf(-g[i]));
        y[i] = (g[i] * sig) * u[i];
    }
}

void add_f32(const float *a, const float *b, size_t count, float *y)
{
    for (size_t i = 0; i < count; i++) {
        y[i] = a[i] + b[i];
    }
}

/* Scratch that outlives a call: the widened K/V planes. A fresh malloc of a few hundred KB per
 * call is an mmap + page faults + munmap every layer of every token; one buffer per calling
 * thread, grown when a longer context needs it, costs nothing after the first token. */
static _Thread_local float *attn_scratch;
static _Thread_local size_t attn_scratch_floats;

static float *attention_scratch(size_t floats)
{
    if (floats > attn_scratch_floats) {
        free(attn_scratch);
        attn_scratch = malloc(floats * sizeof(float));
        attn_scratch_floats = attn_scratch ? floats : 0;
    }
    return attn_scratch;
}

/* 16 floats as one GCC vector (a zmm in the AVX-512 clone, two ymm / four xmm elsewhere);
 * aligned(4) + may_alias: loads and stores straight from any float pointer. */
typedef float bn_v16f __attribute__((vector_size(64), aligned(4), may_alias));

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
        bn_v16f acc = {0.0f};
        for (int d = 0; d < vec; d += 16) {
            acc += *(const bn_v16f *)(qh + d) * *(const bn_v16f *)(kr + d);
        }
        float dot = 0.0f;
        for (int i = 0; i < 16; i++) {
            dot += acc[i];
        }
        for (int d = vec; d < head_dim; d++) {
            dot += qh[d] * kr[d];
        }
        scores[j] = dot * scale;
        mx = scores[j] > mx ? scores[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j <= last; j++) {
        scores[j] = expf(scores[j] - mx);
        sum += scores[j];
    }
    for (int d = 0; d < head_dim; d++) {
        o[d] = 0.0f;
    }
    for (int j = 0; j <= last; j++) {
        const float *vr = vh + (size_t)j * head_dim;
        float p = scores[j] / sum;
        for (int d = 0; d < vec; d += 16) {
            *(bn_v16f *)(o + d) += p * *(const bn_v16f *)(vr + d);
        }
        for (int d = vec; d < head_dim; d++) {
            o[d] += p * vr[d];
        }
    }
}

/* Attention over the f16 cache. Each KV head's cached rows 0..pos+n-1 (never the whole n_ctx)
 * are widened to f32 once per call (shared by the H/Hkv query heads that read them, with the
 * table's F16C/NEON conversion), then every (token, head) pair runs scores -> max-subtracted
 * softmax -> weighted sum of V. Small calls (a decode step at a short context) stay on the
 * calling thread: a parallel region and its barriers cost more than the work there, and on a
 * contended machine each barrier can wait a whole scheduler slice. */
void attention_f16kv(const bn_kernels *kt, const float *q, const float *k, const float *v,
                     uint16_t *kcache, uint16_t *vcache, int n, int pos, int n_heads,
                     int n_kv_heads, int head_dim, float *out, int nthreads)
{
    int kvw = n_kv_heads * head_dim;
    int group = n_heads / n_kv_heads;
    int ctx = pos + n;
    for (int t = 0; t < n; t++) {
        for (int c = 0; c < kvw; c++) {
            kcache[(size_t)(pos + t) * kvw + c] = bn_f32_to_f16(k[(size_t)t * kvw + c]);
            vcache[(size_t)(pos + t) * kvw + c] = bn_f32_to_f16(v[(size_t)t * kvw + c]);
        }
    }
    /* kf, vf: [Hkv][ctx][D] f32 */
    size_t plane = (size_t)ctx * head_dim;
    float *kf = attention_scratch(2 * (size_t)n_kv_heads * plane);
    if (!kf) {
        return;
    }
    float *vf = kf + (size_t)n_kv_heads * plane;
    float scale = 1.0f / sqrtf((float)head_dim);
    /* multiply-adds of the call (q.K and p.V): below ~1M a single thread wins */
    double work = 2.0 * n * (double)n_heads * ctx * head_dim;
    int parallel = nthreads > 1 && work >= 1048576.0;
    #pragma omp parallel num_threads(nthreads) if (parallel)
    {
        #pragma omp for schedule(static) collapse(2)
        for (int kvh = 0; kvh < n_kv_heads; kvh++) {
            for (int j = 0; j < ctx; j++) {
                size_t src = (size_t)j * kvw + (size_t)kvh * head_dim;
                size_t dst = kvh * plane + (size_t)j * head_dim;
                kt->f16_to_f32_row(kcache + src, kf + dst, head_dim);
                kt->f16_to_f32_row(vcache + src, vf + dst, head_dim);
            }
        }
        float *scores = malloc((size_t)ctx * sizeof(float));
        #pragma omp for schedule(static)
        for (int th = 0; th < n * n_heads; th++) {
            if (!scores) {
                continue;
            }
            int t = th / n_heads;
            int h = th % n_heads;
            const float *kh = kf + (size_t)(h / group) * plane;
            const float *vh = vf + (size_t)(h / group) * plane;
            int last = pos + t;  /* causal: positions 0..last */
            float *o = out + (size_t)th * head_dim;
            /* ggml's F16 dot rounds q to f16 before q.K (the contract says so too);
             * head_dim <= 1024 is checked by the caller (backend.py rope/attention) */
            float qbuf[1024];
            for (int d = 0; d < head_dim; d++) {
                qbuf[d] = bn_f16_to_f32(bn_f32_to_f16(q[(size_t)th * head_dim + d]));
            }
            attend_one(qbuf, kh, vh, last, head_dim, scale, scores, o);
        }
        free(scores);
    }
}

/* The rows are independent sequences, so this is rope + attention for each in turn. What it
 * saves is the per-sequence trip through Python (three slices, two ropes, an attention and a
 * concatenation per layer), which on a small model costs more than the arithmetic. */
void attention_rows_f16kv(const bn_kernels *kt, float *q, float *k, const float *v,
                          uint16_t *const *kcaches, uint16_t *const *vcaches,
                          const int *positions, int B, int n_heads, int n_kv_heads,
                          int head_dim, double theta, float *out, int nthreads)
{
    size_t qw = (size_t)n_heads * head_dim;
    size_t kvw = (size_t)n_kv_heads * head_dim;
    for (int r = 0; r < B; r++) {
        rope_neox_f32(q + r * qw, 1, n_heads, head_dim, positions[r], theta);
        rope_neox_f32(k + r * kvw, 1, n_kv_heads, head_dim, positions[r], theta);
        attention_f16kv(kt, q + r * qw, k + r * kvw, v + r * kvw, kcaches[r], vcaches[r], 1,
                        positions[r], n_heads, n_kv_heads, head_dim, out + r * qw, nthreads);
    }
}
