// Helpers shared by every program (prepended by the host before building).
// Why no FP contraction: the contract fixes the order and rounding of the float epilogues, and a
// fused multiply-add would round once where the reference rounds twice.
#pragma OPENCL FP_CONTRACT OFF

// Wide accumulators and rope angles: double where the device has cl_khr_fp64 (then rmsnorm and
// rope match the reference bit for bit), else float.
#ifdef USE_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
typedef double angle_t;
#else
typedef float acc_t;
typedef float angle_t;
#endif

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

// One reduction tree whatever the work-group size, so a fused kernel's work-group (a matmul's
// lanes x rows) gives the bits of the op kernel it replaces: REDUCE_LANES virtual lanes; lane v
// folds VALUE (an expression of IDX) for IDX = v, v + REDUCE_LANES, ... below count, in order,
// from INIT; then lanes v and v + half meet for half = REDUCE_LANES / 2 .. 1. The result is in
// scratch[0] (REDUCE_LANES entries of TYPE) for every work-item; lid, wg: the flat local id and
// size (any size).
#define REDUCE_LANES 256
#define FIXED_REDUCE(scratch, TYPE, INIT, count, IDX, VALUE, OP, lid, wg)       \
    do {                                                                         \
        for (int v_ = (lid); v_ < REDUCE_LANES; v_ += (wg)) {                    \
            TYPE s_ = (INIT);                                                    \
            for (int IDX = v_; IDX < (count); IDX += REDUCE_LANES) {             \
                s_ = OP(s_, (VALUE));                                            \
            }                                                                    \
            (scratch)[v_] = s_;                                                  \
        }                                                                        \
        barrier(CLK_LOCAL_MEM_FENCE);                                            \
        for (int h_ = REDUCE_LANES / 2; h_ > 0; h_ /= 2) {                       \
            for (int v_ = (lid); v_ < h_; v_ += (wg)) {                          \
                (scratch)[v_] = OP((scratch)[v_], (scratch)[v_ + h_]);           \
            }                                                                    \
            barrier(CLK_LOCAL_MEM_FENCE);                                        \
        }                                                                        \
    } while (0)

// RMSNorm in ggml's order: the f32 squares summed in acc_t (FIXED_REDUCE's tree), the mean
// rounded to f32, scale = 1 / sqrt(mean + eps) in f32; an element is (x * scale) * w.
// scratch: REDUCE_LANES acc_t, reusable when this returns.
float rms_scale(__global const float* x, const int K, const float eps, __local acc_t* scratch,
                const int lid, const int wg) {
    FIXED_REDUCE(scratch, acc_t, 0, K, k_, (acc_t)(x[k_] * x[k_]), OP_ADD, lid, wg);
    const float mean = (float)(scratch[0] / (acc_t)K);
    barrier(CLK_LOCAL_MEM_FENCE);
    return div_rn(1.0f, sqrt_rn(mean + eps));
}

float normed(const float x, const float scale, const float w) {
    return (x * scale) * w;
}

// The activation quantizers' arithmetic (bitnet.formats.activations). Per-token int8 (I2_S):
// the reference floors m at 1e-5 in float64, then rounds 127/m to f32. For an f32 m, the
// double-rounded quotient equals the correctly rounded f32 quotient; 1e-5f is the float just
// below 1e-5, so "m > 1e-5f" is "m >= 1e-5". float32(127 / 1e-5) = 12700000.
float i8_scale(const float m) {
    return m > 1e-5f ? div_rn(127.0f, m) : 12700000.0f;
}

char i8_value(const float x, const float scale) {
    return (char)clamp(rint(x * scale), -128.0f, 127.0f);
}

// Q8_K (TQ1_0 / TQ2_0) of a 256-block whose signed element of largest |x| is amax != 0.
float q8k_iscale(const float amax) {
    return div_rn(-127.0f, amax);
}

char q8k_value(const float iscale, const float x) {
    return (char)fmin(rint(iscale * x), 127.0f);
}

float q8k_d(const float iscale) {
    return div_rn(1.0f, iscale);
}

// The gatings, in the reference's order: max(g, 0)^2 * up and g * sigmoid(g) * up.
float relu2_mul_value(const float gate, const float up) {
    const float r = fmax(gate, 0.0f);
    return r * r * up;
}

float silu_mul_value(const float gate, const float up) {
    return gate / (1.0f + exp(-gate)) * up;
}

// NEOX rotation of the pair (a, b) by the table entries (c, s), in angle_t, rounded to f32 once.
float2 rope_pair(const float a, const float b, const angle_t c, const angle_t s) {
    const angle_t da = a;
    const angle_t db = b;
    return (float2)((float)(da * c - db * s), (float)(da * s + db * c));
}

// ---- ternary rows (linear_ternary.cl and the fused decode-layer kernels, decode_layer.cl)
// Codes uint8 [M, K/4] in the I2_S interleave: each 128-element block is 32 bytes, byte b holds
// elements b, b+32, b+64, b+96 of the block at bit shifts 6, 4, 2, 0. Reading 4 bytes at once
// (a uint) gives, per shift, the codes of 4 consecutive elements: one packed 4 x int8 dot.

// The 4 ternary values {-1, 0, 1} of group g (0..3) of a code word, as signed bytes.
inline char4 ternary4(uint word, int g) {
    uint codes = (word >> (6 - 2 * g)) & 0x03030303u;
    return as_char4(as_uchar4(codes) - (uchar4)(1));
}

// acc[tt] += dot of one code word with token t0+tt's activations at element `base` (q: int8
// rows K apart, in __global or __local memory).
#define ACCUMULATE_WORD(word, base, q, K, t0, n, acc)                                   \
    for (int g = 0; g < 4; g++) {                                                         \
        const char4 w4 = ternary4((word), g);                                             \
        for (int tt = 0; tt < TILE_N; tt++) {                                             \
            if ((t0) + tt < (n)) {                                                        \
                char4 q4 = vload4(0, (q) + (size_t)((t0) + tt) * (K) + (base) + 32 * g);  \
                (acc)[tt] += DOT4(w4, q4);                                                \
            }                                                                             \
        }                                                                                 \
    }

// acc[tt] += an I2_S row's dots with tokens t0 + tt, over the code words of this lane.
#define I2S_ROW_DOTS(row, q, K, t0, n, acc, lane, lanes)                                \
    for (int u = (lane); u < (K) / 16; u += (lanes)) {                                    \
        const uint word = (row)[u];                                                       \
        const int base = (u / 8) * 128 + (u % 8) * 4;                                     \
        ACCUMULATE_WORD(word, base, q, K, t0, n, acc)                                     \
    }

// A TQ row's exact 256-block sums with tokens t0 + tt: this lane's whole blocks into
// mine[tt * nb + b] (local memory).
#define TQ_ROW_SUMS(row, q, K, t0, n, mine, nb, lane, lanes)                            \
    for (int b = (lane); b < (nb); b += (lanes)) {                                        \
        int acc_[TILE_N];                                                                 \
        for (int tt = 0; tt < TILE_N; tt++) {                                             \
            acc_[tt] = 0;                                                                 \
        }                                                                                 \
        for (int u = b * 16; u < b * 16 + 16; u++) {                                      \
            const uint word = (row)[u];                                                   \
            const int base = (u / 8) * 128 + (u % 8) * 4;                                 \
            ACCUMULATE_WORD(word, base, q, K, t0, n, acc_)                                \
        }                                                                                 \
        for (int tt = 0; tt < TILE_N; tt++) {                                             \
            (mine)[tt * (nb) + b] = acc_[tt];                                             \
        }                                                                                 \
    }

// The I2_S epilogue: float32(float32(dot) / s) * wscale [* out_scale].
float i2s_output(const int dot, const float act_scale, const float wscale,
                 const float out_scale) {
    float v = div_rn((float)dot, act_scale) * wscale;
    if (out_scale != 1.0f) {
        v = v * out_scale;
    }
    return v;
}

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
// sum_b float(isum[b]) * (dw[b] * dy[b]), then times out_scale unless that is 1. Defined for
// activation scales dy in global memory and (the fused kernels' prologue) in local memory.
#define DEFINE_BLOCK_SUMS_TO_Y(NAME, DY_SPACE)                                              \
    float NAME(__local const int* isum, const int nb, __global const float* dw,              \
               DY_SPACE const float* dy, const float out_scale) {                            \
        float sum = 0.0f;                                                                    \
        for (int b = 0; b < nb; b++) {                                                       \
            sum += (float)isum[b] * (dw[b] * dy[b]);                                         \
        }                                                                                    \
        if (out_scale != 1.0f) {                                                             \
            sum = sum * out_scale;                                                           \
        }                                                                                    \
        return sum;                                                                          \
    }
DEFINE_BLOCK_SUMS_TO_Y(block_sums_to_y, __global)
DEFINE_BLOCK_SUMS_TO_Y(block_sums_to_y_local, __local)

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
