/* ops.c: the small ops of the forward pass (rmsnorm, rope, attention, gating, add) in C.
 * They are O(n*K) or O(n*ctx*D) and run well from auto-vectorized C; the numerics follow
 * backend.py (float64 where the reference uses it). */
#include <math.h>
#include <stdlib.h>

#include "bitnet_cpu.h"

void rmsnorm_f32(const float *x, const float *w, int n, int K, float eps, float *y, int nthreads)
{
    /* ggml's order (as the reference): f32 squares summed in double, the mean rounded to f32,
     * scale = 1 / sqrt(mean + eps) in f32, then (x * scale) * w */
    #pragma omp parallel for schedule(static) num_threads(nthreads) if (n > 1)
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * K;
        float *yt = y + (size_t)t * K;
        double ss = 0.0;
        for (int i = 0; i < K; i++) {
            ss += (double)(xt[i] * xt[i]);
        }
        float mean = (float)(ss / K);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int i = 0; i < K; i++) {
            yt[i] = (xt[i] * scale) * w[i];
        }
    }
}

void rope_neox_f32(float *x, int n, int n_heads, int head_dim, int pos, double theta)
{
    /* angles and the rotation in float64 like the reference; one cos/sin table per token */
    int half = head_dim / 2;
    double cs[512];
    double sn[512];
    if (half > 512) {
        return;  /* checked by the caller */
    }
    for (int t = 0; t < n; t++) {
        double p = (double)(pos + t);
        for (int i = 0; i < half; i++) {
            double angle = p * pow(theta, -2.0 * i / head_dim);
            cs[i] = cos(angle);
            sn[i] = sin(angle);
        }
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

/* Attention over the f16 cache. Each KV head's cached rows are widened to f32 once per call
 * (shared by the H/Hkv query heads that read them, with the table's F16C/NEON conversion), then
 * every (token, head) pair runs scores -> max-subtracted softmax -> weighted sum of V. */
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
    float *kf = malloc((size_t)n_kv_heads * plane * sizeof(float));
    float *vf = malloc((size_t)n_kv_heads * plane * sizeof(float));
    if (!kf || !vf) {
        free(kf);
        free(vf);
        return;
    }
    float scale = 1.0f / sqrtf((float)head_dim);
    #pragma omp parallel num_threads(nthreads)
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
            int t = th / n_heads;
            int h = th % n_heads;
            const float *kh = kf + (size_t)(h / group) * plane;
            const float *vh = vf + (size_t)(h / group) * plane;
            int last = pos + t;  /* causal: positions 0..last */
            float *o = out + (size_t)th * head_dim;
            /* ggml's F16 dot rounds q to f16 before q.K (the contract says so too) */
            float *qh = o;
            for (int d = 0; d < head_dim; d++) {
                qh[d] = bn_f16_to_f32(bn_f32_to_f16(q[(size_t)th * head_dim + d]));
            }
            float mx = -INFINITY;
            for (int j = 0; j <= last; j++) {
                const float *kr = kh + (size_t)j * head_dim;
                float dot = 0.0f;
                for (int d = 0; d < head_dim; d++) {
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
                for (int d = 0; d < head_dim; d++) {
                    o[d] += p * vr[d];
                }
            }
        }
        free(scores);
    }
    free(kf);
    free(vf);
}
