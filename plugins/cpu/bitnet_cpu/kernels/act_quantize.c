/* act_quantize.c: activation quantization for the ternary matmuls (generic C; it is O(n*K),
 * small next to the O(n*M*K) matmul, so it is not worth an ISA file of its own).
 * Numerics: backend.py linear_ternary docstring / docs/formats.md 1.5 and 2.5.
 *
 * Every loop is written so the compiler vectorizes it (BN_WIDE: AVX-512 and AVX2 clones): the
 * maxima are taken in 16 independent lanes and then across the lanes. A maximum does not depend
 * on the order it is taken in (NaN never wins a strict comparison, |x| has no -0), and the Q8_K
 * block keeps, per lane, the first index of its largest |x|, so the smallest such index over the
 * lanes is the first one in the block: the same values as one sequential scan. A 128-token
 * prompt of the 2B shape quantizes ~85M values (six K = 2560 inputs and one K = 6912 per layer):
 * ~80 ms on one thread as sequential scans, ~4% of the prompt (2026-12-05, Zen 4). */
#include <math.h>
#include <string.h>

#include "bitnet_cpu.h"

#define LANES 16

/* Round to nearest, ties to even, for |v| <= 2^22: ggml's nearest_int trick (exact, no libm). */
static inline int nearest_int(float v)
{
    float val = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &val, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* lane = max(lane, |x[0..15]|) lane by lane (GCC vectors: written over arrays, GCC left the
 * per-lane index selection of block_signed_max scalar); returns all ones in the lanes where |x| was
 * strictly larger (never for NaN, so NaN is skipped as by a sequential a > amax) */
static inline __attribute__((always_inline)) bn_v16i lane_max(bn_v16f *lane, const float *x)
{
    bn_v16f a = (bn_v16f)(*(const bn_v16i *)x & 0x7fffffff);  /* |x|, -0 as +0 */
    bn_v16i more = a > *lane;
    *lane = (bn_v16f)(((bn_v16i)a & more) | ((bn_v16i)*lane & ~more));
    return more;
}

/* max |x[i]| over K values (0 when none is larger) */
static inline __attribute__((always_inline)) float abs_max(const float *x, int K)
{
    bn_v16f lane = {0.0f};
    int i = 0;
    for (; i + LANES <= K; i += LANES) {
        lane_max(&lane, x + i);
    }
    float m = 0.0f;
    for (; i < K; i++) {
        float a = fabsf(x[i]);
        m = a > m ? a : m;
    }
    for (int j = 0; j < LANES; j++) {
        m = lane[j] > m ? lane[j] : m;
    }
    return m;
}

/* The signed element of largest |x| in a 256-block, the first one on ties (0 for a block of
 * zeros): each lane keeps its largest |x| and the first index holding it. */
static inline __attribute__((always_inline)) float block_signed_max(const float *xb)
{
    const bn_v16i index = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    bn_v16f lane = {0.0f};
    bn_v16i at = {0};
    for (int i = 0; i < 256; i += LANES) {
        bn_v16i more = lane_max(&lane, xb + i);
        at = ((index + i) & more) | (at & ~more);
    }
    float amax = 0.0f;
    int first = 0;
    for (int j = 0; j < LANES; j++) {
        if (lane[j] > amax || (lane[j] == amax && at[j] < first)) {
            amax = lane[j];
            first = at[j];
        }
    }
    return amax == 0.0f ? 0.0f : xb[first];
}

BN_WIDE
void act_quantize_per_token_i8(const float *x, int n, int K, int8_t *q, float *s,
                               int32_t *asum)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * K;
        int8_t *qt = q + (size_t)t * K;
        float amax = abs_max(xt, K);
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

BN_WIDE
void act_quantize_q8_k(const float *x, int n, int K, int8_t *q, float *d, int32_t *bsum)
{
    int nb = K / 256;
    for (int t = 0; t < n; t++) {
        for (int b = 0; b < nb; b++) {
            const float *xb = x + (size_t)t * K + (size_t)b * 256;
            int8_t *qb = q + (size_t)t * K + (size_t)b * 256;
            float max = block_signed_max(xb);
            size_t k = (size_t)t * nb + b;
            if (max == 0.0f) {
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
