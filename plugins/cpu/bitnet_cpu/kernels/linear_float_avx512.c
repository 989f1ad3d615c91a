/* linear_float_avx512.c: the F16 row dot product with 16-wide f32 (AVX-512F/BW/VL); the other
 * float formats use the AVX2 kernels (linear_float_avx2.c). */
#include <immintrin.h>
#include <string.h>

#include "bitnet_cpu.h"

float dot_f16_f32_avx512(const void *row, const float *x, int K)
{
    const uint16_t *w = (const uint16_t *)row;
    __m512 a[4];
    for (int j = 0; j < 4; j++) {
        a[j] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 64 <= K; i += 64) {
        _mm_prefetch((const char *)(w + i) + BN_PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w + i) + 64 + BN_PREFETCH_BYTES, _MM_HINT_T0);
        for (int j = 0; j < 4; j++) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(w + i + 16 * j));
            a[j] = _mm512_fmadd_ps(_mm512_cvtph_ps(h), _mm512_loadu_ps(x + i + 16 * j), a[j]);
        }
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]),
                                                   _mm512_add_ps(a[2], a[3])));
    for (; i < K; i++) {
        acc += bn_f16_to_f32(w[i]) * x[i];
    }
    return acc;
}
