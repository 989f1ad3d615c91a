/* linear_float_generic.c: f32 dot products of one float-format weight row with f32 x.
 * Semantics (backend.py linear_float): dequantize each weight exactly as ggml does, then an f32
 * multiply-add; the summation order is free. */
#include <string.h>

#include "bitnet_cpu.h"

float dot_f32_f32_generic(const void *row, const float *x, int K)
{
    const float *w = (const float *)row;
    float acc = 0.0f;
    for (int i = 0; i < K; i++) {
        acc += w[i] * x[i];
    }
    return acc;
}

float dot_f16_f32_generic(const void *row, const float *x, int K)
{
    const uint16_t *w = (const uint16_t *)row;
    float acc = 0.0f;
    for (int i = 0; i < K; i++) {
        acc += bn_f16_to_f32(w[i]) * x[i];
    }
    return acc;
}

float dot_bf16_f32_generic(const void *row, const float *x, int K)
{
    const uint16_t *w = (const uint16_t *)row;
    float acc = 0.0f;
    for (int i = 0; i < K; i++) {
        acc += bn_bf16_to_f32(w[i]) * x[i];
    }
    return acc;
}

/* Q8_0 block (34 bytes): f16 d, then 32 int8; weight = d * q. */
float dot_q8_0_f32_generic(const void *row, const float *x, int K)
{
    const uint8_t *b = (const uint8_t *)row;
    float acc = 0.0f;
    for (int blk = 0; blk < K / 32; blk++) {
        uint16_t dh;
        memcpy(&dh, b, 2);
        float d = bn_f16_to_f32(dh);
        const int8_t *qs = (const int8_t *)(b + 2);
        for (int i = 0; i < 32; i++) {
            acc += (d * (float)qs[i]) * x[blk * 32 + i];
        }
        b += 34;
    }
    return acc;
}

/* Q6_K block (210 bytes): ql[128] low nibbles, qh[64] high 2 bits, int8 scales[16], f16 d.
 * Against Q8_K activations: isum_b = sum_j sc_j * sum_{e in sub-block j} (q6_e - 32) * q8_e
 * exactly, then y = sum_b float(isum_b) * (d_w_b * d_y_b) in block order. */
float dot_q6_k_q8_k_generic(const void *row, const int8_t *q, const int16_t *pair32,
                            const float *dy, int K)
{
    (void)pair32;  /* the signed codes need no offset correction here */
    const uint8_t *b = (const uint8_t *)row;
    float acc = 0.0f;
    for (int blk = 0; blk < K / 256; blk++) {
        const int8_t *sc = (const int8_t *)(b + 192);
        uint16_t dh;
        memcpy(&dh, b + 208, 2);
        uint8_t c[256];
        bn_q6_k_codes(b, c);
        const int8_t *qb = q + blk * 256;
        int32_t isum = 0;
        for (int e = 0; e < 256; e++) {
            isum += sc[e / 16] * (c[e] - 32) * qb[e];
        }
        acc += (float)isum * (bn_f16_to_f32(dh) * dy[blk]);
        b += 210;
    }
    return acc;
}

/* Q6_K row -> w16 [K] = sc_j * (q6 - 32) in natural element order (element e of a block is
 * in sub-block e / 16) and dw [K/256] = d: the batched head path's once-per-row unpack. */
static void q6_k_unpack_generic(const void *row, int16_t *w16, float *dw, int K)
{
    const uint8_t *b = (const uint8_t *)row;
    for (int blk = 0; blk < K / 256; blk++) {
        const int8_t *sc = (const int8_t *)(b + 192);
        uint16_t dh;
        memcpy(&dh, b + 208, 2);
        dw[blk] = bn_f16_to_f32(dh);
        uint8_t c[256];
        bn_q6_k_codes(b, c);
        int16_t *w = w16 + (size_t)blk * 256;
        for (int e = 0; e < 256; e++) {
            w[e] = (int16_t)(sc[e / 16] * (c[e] - 32));
        }
        b += 210;
    }
}

/* w16 x int16 Q8_K copies: exact integer block sums, f32 epilogue in block order per token. */
static void dot_q6_w16_q16_generic(const int16_t *w16, const float *dw, int nr,
                                   const int16_t *q16, size_t qstride, const float *dy, int nt,
                                   int K, float *out)
{
    int nb = K / 256;
    if (nr > 1) {
        for (int r = 0; r < nr; r++) {
            dot_q6_w16_q16_generic(w16 + (size_t)r * K, dw + (size_t)r * nb, 1, q16, qstride,
                                   dy, nt, K, out + (size_t)r * nt);
        }
        return;
    }
    for (int t = 0; t < nt; t++) {
        const int16_t *qt = q16 + (size_t)t * qstride;
        float acc = 0.0f;
        for (int blk = 0; blk < nb; blk++) {
            int32_t isum = 0;
            for (int e = blk * 256; e < blk * 256 + 256; e++) {
                isum += (int32_t)w16[e] * qt[e];
            }
            acc += (float)isum * (dw[blk] * dy[(size_t)t * nb + blk]);
        }
        out[t] = acc;
    }
}

/* The int16 activation layout of the generic batched path: q widened, natural order. */
void q6_k_act_i16_generic(const int8_t *q, int K, uint8_t *qa)
{
    int16_t *q16 = (int16_t *)qa;
    for (int i = 0; i < K; i++) {
        q16[i] = q[i];
    }
}

/* Batched Q6_K rows (bitnet_cpu.h), generic: each row unpacked once, dotted with every token. */
void q6_k_rows_generic(const uint8_t *w, size_t row_bytes, int nr, int K, const uint8_t *qa,
                       size_t qa_stride, const float *dy, int nt, float *y, size_t ystride,
                       float out_scale)
{
    int nb = K / 256;
    int16_t w16[K];
    float dw[nb];
    float out[BN_Q6_K_TOKENS];
    for (int r = 0; r < nr; r++) {
        q6_k_unpack_generic(w + (size_t)r * row_bytes, w16, dw, K);
        dot_q6_w16_q16_generic(w16, dw, 1, (const int16_t *)qa, qa_stride / sizeof(int16_t), dy,
                               nt, K, out);
        for (int t = 0; t < nt; t++) {
            y[(size_t)t * ystride + r] = out_scale != 1.0f ? out[t] * out_scale : out[t];
        }
    }
}

int dequantize_row(int fmt, const uint8_t *row, int K, float *out)
{
    switch (fmt) {
    case BN_F32:
        memcpy(out, row, (size_t)K * 4);
        return 0;
    case BN_F16:
    case BN_BF16: {
        const uint16_t *h = (const uint16_t *)row;
        for (int i = 0; i < K; i++) {
            out[i] = fmt == BN_F16 ? bn_f16_to_f32(h[i]) : bn_bf16_to_f32(h[i]);
        }
        return 0;
    }
    case BN_Q8_0:
        for (int blk = 0; blk < K / 32; blk++) {
            const uint8_t *b = row + (size_t)blk * 34;
            uint16_t dh;
            memcpy(&dh, b, 2);
            float d = bn_f16_to_f32(dh);
            for (int i = 0; i < 32; i++) {
                out[blk * 32 + i] = d * (float)((const int8_t *)(b + 2))[i];
            }
        }
        return 0;
    case BN_Q6_K:
        for (int blk = 0; blk < K / 256; blk++) {
            const uint8_t *b = row + (size_t)blk * 210;
            const int8_t *sc = (const int8_t *)(b + 192);
            uint16_t dh;
            memcpy(&dh, b + 208, 2);
            float d = bn_f16_to_f32(dh);
            uint8_t c[256];
            bn_q6_k_codes(b, c);
            for (int e = 0; e < 256; e++) {
                out[blk * 256 + e] = (d * (float)sc[e / 16]) * (float)(c[e] - 32);
            }
        }
        return 0;
    default:
        return -2;
    }
}
