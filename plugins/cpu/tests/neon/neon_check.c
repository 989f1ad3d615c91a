/* neon_check.c: runs the NEON kernels against the generic ones on seeded data.
 * Built with an aarch64 cross compiler and run under qemu-aarch64 by test_neon_qemu.py (or on
 * an Arm machine directly). Prints one line per check; exit status 0 when all agree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitnet_cpu.h"

static uint32_t rng_state = 12345u;

static uint32_t next_u32(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state;
}

static int check_ternary(int K, int gps, int nt, int extreme)
{
    size_t wbytes = (size_t)K / 4;
    uint8_t *w = malloc(wbytes);
    int8_t *q = malloc((size_t)nt * K);
    int nsum = K / 128 / gps;
    int32_t *want = malloc(sizeof(int32_t) * nt * nsum);
    int32_t *got = malloc(sizeof(int32_t) * nt * nsum);
    for (size_t i = 0; i < wbytes; i++) {
        uint8_t b = 0;
        for (int f = 0; f < 4; f++) {
            uint32_t c = extreme ? 2u : next_u32() % 3u;  /* codes 0..2 */
            b |= (uint8_t)(c << (2 * f));
        }
        w[i] = b;
    }
    for (size_t i = 0; i < (size_t)nt * K; i++) {
        q[i] = extreme ? (int8_t)(i % 2 ? 127 : -128) : (int8_t)(next_u32() % 256u);
    }
    ternary_tile_generic(w, K, gps, q, (size_t)K, nt, want);
    bn_kernels_neon.ternary_tile(w, K, gps, q, (size_t)K, nt, got);
    int ok = memcmp(want, got, sizeof(int32_t) * nt * nsum) == 0;
    printf("%s ternary_tile K=%d gps=%d nt=%d extreme=%d\n", ok ? "ok" : "FAIL", K, gps, nt,
           extreme);
    free(w);
    free(q);
    free(want);
    free(got);
    return ok;
}

static int check_f16(int K)
{
    uint16_t *w = malloc(sizeof(uint16_t) * K);
    float *x = malloc(sizeof(float) * K);
    float *a = malloc(sizeof(float) * K);
    float *b = malloc(sizeof(float) * K);
    double mag = 0.0;
    for (int i = 0; i < K; i++) {
        float v = ((float)(next_u32() % 20001u) - 10000.0f) / 1000.0f;
        w[i] = bn_f32_to_f16(v);
        x[i] = ((float)(next_u32() % 2001u) - 1000.0f) / 100.0f;
        mag += fabs(bn_f16_to_f32(w[i]) * x[i]);
    }
    float want = dot_f16_f32_generic(w, x, K);
    float got = bn_kernels_neon.dot_f16(w, x, K);
    bn_kernels_neon.f16_to_f32_row(w, a, K);
    f16_to_f32_row_generic(w, b, K);
    int ok = fabs((double)want - got) <= 1e-5 * mag + 1e-6 && memcmp(a, b, sizeof(float) * K) == 0;
    printf("%s dot_f16 K=%d (%g vs %g)\n", ok ? "ok" : "FAIL", K, want, got);
    free(w);
    free(x);
    free(a);
    free(b);
    return ok;
}

int main(void)
{
    int ok = 1;
    const int ks[] = {128, 256, 384, 2560, 6912};
    for (int i = 0; i < 5; i++) {
        int K = ks[i];
        for (int nt = 1; nt <= 8; nt++) {  /* the NEON tile handles up to 8 tokens */
            ok &= check_ternary(K, K / 128, nt, 0);  /* I2_S: one sum per row */
            if (K % 256 == 0) {
                ok &= check_ternary(K, 2, nt, 0);  /* TQ: one sum per 256-block */
            }
        }
        ok &= check_ternary(K, K / 128, 3, 1);
        ok &= check_f16(K + 3);
    }
    printf(ok ? "ALL OK\n" : "SOME FAILED\n");
    return ok ? 0 : 1;
}
