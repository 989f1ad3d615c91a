/* act_quantize.c: activation quantization for the ternary matmuls (generic C; it is O(n*K),
 * small next to the O(n*M*K) matmul, so it is not worth an ISA file of its own).
 * Numerics: backend.py linear_ternary docstring / docs/formats.md 1.5 and 2.5. */
#include <math.h>
#include <string.h>

#include "bitnet_cpu.h"

/* Round to nearest, ties to even, for |v| <= 2^22: ggml's nearest_int trick (exact, no libm). */
static inline int nearest_int(float v)
{
    float val = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &val, 4);
    return (i & 0x007fffff) - 0x00400000;
}

void act_quantize_per_token_i8(const float *x, int n, int K, int8_t *q, float *s,
                               int32_t *asum)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * K;
        int8_t *qt = q + (size_t)t * K;
        float amax = 0.0f;
        for (int i = 0; i < K; i++) {
            float a = fabsf(xt[i]);
            amax = a > amax ? a : amax;
        }
        double m = (double)amax > 1e-5 ? (double)amax : 1e-5;  /* floor in float64 */
        float st = (float)(127.0 / m);
        int32_t sum = 0;
        /* branch-free, so the compiler vectorizes it */
        for (int i = 0; i < K; i++) {
            int v = nearest_int(xt[i] * st);
            v = v > 127 ? 127 : (v < -128 ? -128 : v);
            qt[i] = (int8_t)v;
            sum += v;
        }
        s[t] = st;
        asum[t] = sum;
    }
}

void act_quantize_q8_k(const float *x, int n, int K, int8_t *q, float *d, int32_t *bsum)
{
    int nb = K / 256;
    for (int t = 0; t < n; t++) {
        for (int b = 0; b < nb; b++) {
            const float *xb = x + (size_t)t * K + (size_t)b * 256;
            int8_t *qb = q + (size_t)t * K + (size_t)b * 256;
            float amax = 0.0f;
            float max = 0.0f;
            for (int j = 0; j < 256; j++) {
                float a = fabsf(xb[j]);
                if (a > amax) {  /* strict: the first element of largest |x| wins */
                    amax = a;
                    max = xb[j];
                }
            }
            size_t k = (size_t)t * nb + b;
            if (amax == 0.0f) {
                memset(qb, 0, 256);
                d[k] = 0.0f;
                bsum[k] = 0;
                continue;
            }
            float iscale = -127.0f / max;
            int32_t sum = 0;
            for (int j = 0; j < 256; j++) {
                int v = nearest_int(iscale * xb[j]);
                v = v < 127 ? v : 127;
                qb[j] = (int8_t)v;
                sum += v;
            }
            d[k] = 1.0f / iscale;
            bsum[k] = sum;
        }
    }
}
