// Helpers shared by every program (prepended by the host before building).
// Why no FP contraction: the contract fixes the order and rounding of the float epilogues, and a
// fused multiply-add would round once where the reference rounds twice.
#pragma OPENCL FP_CONTRACT OFF

// a / b rounded to nearest-even in f32, whatever precision the device's "/" has (OpenCL allows
// 2.5 ulp). The fma residual a - q*b is exact near the quotient, so stepping to the neighbour
// with the smaller residual yields the correctly rounded quotient (ties cannot occur: a midpoint
// quotient of two floats would need a 25-bit odd factor of a 24-bit significand).
float div_rn(float a, float b) {
    float q = a / b;
    for (int step = 0; step < 3; step++) {
        float r = fabs(fma(-q, b, a));
        float up = nextafter(q, INFINITY);
        float down = nextafter(q, -INFINITY);
        if (fabs(fma(-up, b, a)) < r) {
            q = up;
        } else if (fabs(fma(-down, b, a)) < r) {
            q = down;
        } else {
            break;
        }
    }
    return q;
}

// sqrt(x) rounded to nearest (OpenCL allows 3 ulp): step to the neighbour with the smaller exact
// residual |x - s*s|; that picks the nearer root except within ~2^-24 of a midpoint.
float sqrt_rn(float x) {
    float s = sqrt(x);
    for (int step = 0; step < 3; step++) {
        float r = fabs(fma(-s, s, x));
        float up = nextafter(s, INFINITY);
        float down = nextafter(s, 0.0f);
        if (fabs(fma(-up, up, x)) < r) {
            s = up;
        } else if (fabs(fma(-down, down, x)) < r) {
            s = down;
        } else {
            break;
        }
    }
    return s;
}

// Signed 4 x int8 dot product. The host defines USE_INT_DOT when the device reports
// cl_khr_integer_dot_product with 4x8-bit inputs (and the compiler must agree through the
// extension's feature macro); otherwise widen and multiply-add.
#if defined(USE_INT_DOT) && defined(cl_khr_integer_dot_product) && \
    (defined(__opencl_c_integer_dot_product_input_4x8bit) || __OPENCL_C_VERSION__ < 300)
#define DOT4(a, b) dot((a), (b))
#else
inline int dot4_fallback(char4 a, char4 b) {
    int4 p = convert_int4(a) * convert_int4(b);
    return (p.x + p.y) + (p.z + p.w);
}
#define DOT4(a, b) dot4_fallback((a), (b))
#endif

// Tree reduction of one value per work-item over a power-of-two work-group; every work-item
// reads the result from scratch[0] afterwards. OP is a two-argument macro or function.
#define REDUCE(scratch, value, lid, wg, OP)                                      \
    do {                                                                         \
        scratch[lid] = (value);                                                  \
        barrier(CLK_LOCAL_MEM_FENCE);                                            \
        for (int half_ = (wg) / 2; half_ > 0; half_ /= 2) {                      \
            if ((lid) < half_) {                                                 \
                scratch[lid] = OP(scratch[lid], scratch[(lid) + half_]);         \
            }                                                                    \
            barrier(CLK_LOCAL_MEM_FENCE);                                        \
        }                                                                        \
    } while (0)

#define OP_ADD(a, b) ((a) + (b))
#define OP_MAX(a, b) fmax((a), (b))

// The matmuls' lane reduction: each lane's partial sums acc[TILE_N] of one row go to mine
// [TILE_N][lanes] (that row's local scratch), then a tree over the lanes leaves token tt's total
// in mine[tt * lanes]. A macro: TILE_N and the element type (int or float) are the caller's.
#define REDUCE_TILE_LANES(mine, acc, lane, lanes)                                \
    do {                                                                         \
        for (int tt_ = 0; tt_ < TILE_N; tt_++) {                                 \
            (mine)[tt_ * (lanes) + (lane)] = (acc)[tt_];                         \
        }                                                                        \
        barrier(CLK_LOCAL_MEM_FENCE);                                            \
        for (int stride_ = (lanes) / 2; stride_ > 0; stride_ /= 2) {             \
            if ((lane) < stride_) {                                              \
                for (int tt_ = 0; tt_ < TILE_N; tt_++) {                         \
                    const int at_ = tt_ * (lanes) + (lane);                      \
                    (mine)[at_] += (mine)[at_ + stride_];                        \
                }                                                                \
            }                                                                    \
            barrier(CLK_LOCAL_MEM_FENCE);                                        \
        }                                                                        \
    } while (0)

// One output of a Q8_K-activation matmul (TQ1_0 / TQ2_0 / Q6_K) from its exact 256-block
// integer sums isum [nb], in block order as llama.cpp's generic kernels:
// sum_b float(isum[b]) * (dw[b] * dy[b]), then times out_scale unless that is 1.
float block_sums_to_y(__local const int* isum, const int nb, __global const float* dw,
                      __global const float* dy, const float out_scale) {
    float sum = 0.0f;
    for (int b = 0; b < nb; b++) {
        sum += (float)isum[b] * (dw[b] * dy[b]);
    }
    if (out_scale != 1.0f) {
        sum = sum * out_scale;
    }
    return sum;
}

// f32 -> nearest-even f16 -> f32, in integers (half variables need cl_khr_fp16). Subnormal
// halves are kept; overflow goes to infinity.
float round_to_f16(float f) {
    uint x = as_uint(f);
    uint sign = x & 0x80000000u;
    uint expo = (x >> 23) & 0xFFu;
    uint mant = x & 0x7FFFFFu;
    if (expo == 0xFFu) {
        return f;
    }
    int e = (int)expo - 112;  // rebias 127 -> 15
    if (e >= 31) {
        return as_float(sign | 0x7F800000u);
    }
    if (e <= 0) {
        // subnormal half: a multiple of 2^-24; scaling by a power of two is exact in f32
        float scaled = fabs(f) * 16777216.0f;  // |f| / 2^-24, exact (power-of-two scale)
        float units = rint(scaled);
        float v = units / 16777216.0f;
        return sign ? -v : v;
    }
    uint kept = mant >> 13;
    uint rem = mant & 0x1FFFu;
    uint bits = ((uint)e << 10) | kept;
    if (rem > 0x1000u || (rem == 0x1000u && (kept & 1u))) {
        bits += 1u;  // a carry rolls into the exponent (or to infinity)
    }
    uint out_expo = bits >> 10;
    if (out_expo >= 31u) {
        return as_float(sign | 0x7F800000u);
    }
    return as_float(sign | ((out_expo + 112u) << 23) | ((bits & 0x3FFu) << 13));
}
