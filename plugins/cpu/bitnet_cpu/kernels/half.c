/* half.c: exact IEEE binary16 <-> binary32 conversions in portable C.
 * Used by the generic path and by the KV cache; the SIMD files use F16C/NEON instructions. */
#include <string.h>

#include "bitnet_cpu.h"

float bn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13);  /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);  /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        bits = sign;  /* signed zero */
    } else {
        /* subnormal: value = man * 2^-24, exact in f32 */
        float f = (float)man * 5.9604644775390625e-08f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

uint16_t bn_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {  /* inf or nan (keep nan quiet) */
        return sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u);
    }
    if (ax >= 0x477ff000u) {  /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00u;
    }
    if (ax < 0x38800000u) {  /* below the smallest normal half (2^-14): subnormal or zero */
        if (ax < 0x33000000u) {  /* < 2^-25: rounds to zero */
            return sign;
        }
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;  /* 14..24: bits to drop to reach units of 2^-24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) {
            q += 1u;
        }
        return sign | (uint16_t)q;
    }
    /* normal: drop 13 mantissa bits with round-to-nearest-even; a carry bumps the exponent */
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

void f16_to_f32_row_generic(const uint16_t *src, float *dst, int count)
{
    for (int i = 0; i < count; i++) {
        dst[i] = bn_f16_to_f32(src[i]);
    }
}

void f32_to_f16_row_generic(const float *src, uint16_t *dst, int count)
{
    for (int i = 0; i < count; i++) {
        dst[i] = bn_f32_to_f16(src[i]);
    }
}
