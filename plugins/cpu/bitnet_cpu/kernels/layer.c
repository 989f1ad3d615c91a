/* layer.c: one transformer block of one decode token in one call (decode_layer).
 *
 * Op by op, a decode token of the 2B shape is ~20 Python calls and 7 OpenMP regions per layer
 * (600 calls, 211 regions a token): ~2.3 ms of CPU a token on one thread with nothing to compute
 * (a 30-layer model of width 256), and at two threads every region's fork and join waits for a
 * thread the scheduler may have taken away. Here the block runs in one region:
 *
 *   every thread: x = rmsnorm(h), quantized into its own buffer (d values: cheaper than a barrier)
 *   rows of q, k, v shared out                                               barrier 1
 *   KV heads shared out: RoPE, cache store, attention                        barrier 2
 *   every thread: sub-norm + quantize; rows of attn_output, h += row         barrier 3
 *   every thread: x = rmsnorm(h) quantized; rows of gate and up              barrier 4
 *   every thread: act(gate) * up, sub-norm, quantize (F values)
 *   rows of ffn_down, h += row                                               barrier 5
 *
 * Each piece is the op-by-op path's own function (rmsnorm_row_f32, quantize_tokens,
 * ternary_units, attention_decode_kv_head, gate_row_f32), applied to the same values in the same
 * order, so the result is the same bits as the forward pass in model.py (tests/test_layer.py).
 * Which thread computes a row never changes its arithmetic.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bitnet_cpu.h"

static int omp_threads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static size_t round64(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

/* Scratch kept by the calling thread between calls (grown when a layer needs more): a token's
 * 30 layers would otherwise malloc and free ~0.2 MB each. */
static _Thread_local uint8_t *layer_scratch;
static _Thread_local size_t layer_scratch_bytes;

static uint8_t *scratch(size_t bytes)
{
    if (bytes > layer_scratch_bytes) {
        free(layer_scratch);
        layer_scratch = aligned_alloc(64, bytes);
        layer_scratch_bytes = layer_scratch ? bytes : 0;
    }
    return layer_scratch;
}

static int units(const bn_matrix *m)
{
    return (m->M + 15) / 16;
}

/* A thread's quantized activations for one matmul input row. */
typedef struct {
    int8_t *q;
    float *ascale;
    int32_t *asum;
} act_buf;

/* Units u0..u1-1 of `count` matrices taken end to end (mats[i] has units(mats[i]) units and
 * writes ys[i]): q, k and v, or gate and up, as one run of rows. */
static void mm_span(const bn_kernels *kt, int fmt, const bn_matrix *const *mats,
                    float *const *ys, int count, int u0, int u1, const act_buf *a)
{
    int base = 0;
    for (int i = 0; i < count && base < u1; i++) {
        const bn_matrix *m = mats[i];
        int lo = u0 > base ? u0 - base : 0;
        int hi = u1 - base < units(m) ? u1 - base : units(m);
        if (lo < hi) {
            ternary_units(kt, fmt, m->codes, m->scales, lo, hi, m->K, a->q, a->ascale, a->asum,
                          1, ys[i], m->M, m->out_scale);
        }
        base += units(m);
    }
}

/* h += m @ quantize(sub_norm ? rmsnorm(in) : in), for one token: the output projection and the
 * down projection (with their sub-norms in the BitNet block). Called inside the parallel region:
 * the omp for shares the matmul units, and its closing barrier orders the residual adds. */
static void project_residual(const bn_kernels *kt, int fmt, const bn_matrix *m, const float *in,
                             const float *sub_norm, float eps, int per_token, float *x,
                             const act_buf *a, float *rows, float *h)
{
    int K = m->K;
    int d = m->M;
    if (sub_norm) {
        rmsnorm_row_f32(in, sub_norm, K, eps, x);
        in = x;
    }
    quantize_tokens(in, 1, K, per_token, a->q, a->ascale, a->asum, 0, 1);
    int ch = bn_stream_chunk(units(m), omp_threads());
    int runs = (units(m) + ch - 1) / ch;
    #pragma omp for schedule(dynamic, 1)
    for (int c = 0; c < runs; c++) {
        int u0 = c * ch;
        int u1 = bn_run_end(c, ch, units(m));
        mm_span(kt, fmt, &m, &rows, 1, u0, u1, a);
        int r0 = 16 * u0;
        int r1 = 16 * u1 < d ? 16 * u1 : d;
        add_row_f32(h + r0, rows + r0, (size_t)(r1 - r0), h + r0);
    }
}

static int shapes_chain(const bn_layer *L)
{
    int d = L->q.K;
    int qd = L->n_heads * L->head_dim;
    int kvd = L->n_kv_heads * L->head_dim;
    int F = L->gate.M;
    const bn_matrix *all[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
    for (int i = 0; i < 7; i++) {
        int K = all[i]->K;
        if (K <= 0 || K % 128 || (L->fmt != BN_I2_S && K % 256) || all[i]->M <= 0) {
            return 0;
        }
    }
    return L->n_kv_heads > 0 && L->n_heads % L->n_kv_heads == 0 && L->head_dim % 2 == 0 &&
           L->head_dim <= 1024 && L->q.M == qd && L->k.M == kvd && L->v.M == kvd &&
           L->k.K == d && L->v.K == d && L->o.K == qd && L->o.M == d && L->gate.K == d &&
           L->up.K == d && L->up.M == F && L->down.K == F && L->down.M == d;
}

int decode_layer(const bn_kernels *kt, const bn_layer *L, float *h, uint16_t *kcache,
                 uint16_t *vcache, const int32_t *table, int pos, int nthreads)
{
    if (!shapes_chain(L) || nthreads < 1) {
        return -2;
    }
    int fmt = L->fmt;
    int per_token = fmt == BN_I2_S;
    int d = L->q.K;
    int qd = L->q.M;
    int kvd = L->k.M;
    int F = L->gate.M;
    int kmax = d > qd ? d : qd;
    kmax = kmax > F ? kmax : F;
    size_t nscale = per_token ? 1 : (size_t)kmax / 256;
    /* shared: q k v | attention out | gate up | a matmul's rows before they join h */
    size_t shared = round64(sizeof(float) * ((size_t)qd + 2 * kvd + qd + 2 * (size_t)F + d));
    /* per thread: a norm's output, the gate product, int8 codes, block scales and sums */
    size_t mine = round64(sizeof(float) * (size_t)kmax) + round64(sizeof(float) * (size_t)F) +
                  round64((size_t)kmax) + 2 * round64(sizeof(float) * nscale);
    uint8_t *base = scratch(shared + mine * (size_t)nthreads);
    if (!base) {
        return -1;
    }
    float *qkv = (float *)base;
    float *kk = qkv + qd;
    float *vv = kk + kvd;
    float *att = vv + kvd;
    float *gu = att + qd;
    float *rows = gu + 2 * (size_t)F;
    int nq = units(&L->q), nk = units(&L->k), nv = units(&L->v);
    int ng = units(&L->gate);
    int failed = 0;
    #pragma omp parallel num_threads(nthreads)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        uint8_t *my = base + shared + mine * (size_t)id;
        float *x = (float *)my;
        float *f = (float *)(my + round64(sizeof(float) * (size_t)kmax));
        act_buf a = {
            .q = (int8_t *)((uint8_t *)f + round64(sizeof(float) * (size_t)F)),
        };
        a.ascale = (float *)((uint8_t *)a.q + round64((size_t)kmax));
        a.asum = (int32_t *)((uint8_t *)a.ascale + round64(sizeof(float) * nscale));

        /* attention: pre-norm, q/k/v */
        rmsnorm_row_f32(h, L->attn_norm, d, L->eps, x);
        quantize_tokens(x, 1, d, per_token, a.q, a.ascale, a.asum, 0, 1);
        const bn_matrix *qkv_m[3] = {&L->q, &L->k, &L->v};
        float *const qkv_y[3] = {qkv, kk, vv};
        int ch = bn_stream_chunk(nq + nk + nv, omp_threads());
        #pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < (nq + nk + nv + ch - 1) / ch; c++) {
            mm_span(kt, fmt, qkv_m, qkv_y, 3, c * ch, bn_run_end(c, ch, nq + nk + nv), &a);
        }
        /* rotary positions, the cache store and causal attention, one KV head at a time */
        #pragma omp for schedule(dynamic, 1)
        for (int kvh = 0; kvh < L->n_kv_heads; kvh++) {
            if (attention_decode_kv_head(kt, qkv, kk, vv, kcache, vcache, table, pos, kvh,
                                         L->n_heads, L->n_kv_heads, L->head_dim, L->theta,
                                         att)) {
                #pragma omp atomic write
                failed = 1;  /* out of memory: the caller gets -1, never unwritten values */
            }
        }
        /* sub-norm, output projection, residual */
        project_residual(kt, fmt, &L->o, att, L->attn_sub_norm, L->eps, per_token, x, &a, rows, h);
        /* feed-forward: pre-norm, gate and up */
        rmsnorm_row_f32(h, L->ffn_norm, d, L->eps, x);
        quantize_tokens(x, 1, d, per_token, a.q, a.ascale, a.asum, 0, 1);
        const bn_matrix *gu_m[2] = {&L->gate, &L->up};
        float *const gu_y[2] = {gu, gu + F};
        ch = bn_stream_chunk(2 * ng, omp_threads());
        #pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < (2 * ng + ch - 1) / ch; c++) {
            mm_span(kt, fmt, gu_m, gu_y, 2, c * ch, bn_run_end(c, ch, 2 * ng), &a);
        }
        /* gating, sub-norm, down projection, residual */
        gate_row_f32(L->silu, gu, gu + F, (size_t)F, f);
        project_residual(kt, fmt, &L->down, f, L->ffn_sub_norm, L->eps, per_token, x, &a, rows,
                         h);
    }
    return failed ? -1 : 0;
}
