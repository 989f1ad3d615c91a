// RMSNorm, the activation quantizers' arithmetic, the gatings and the NEOX rotation, shared by
// rmsnorm / quantize_* / elementwise / rope .comp and the fused decode-layer shaders
// (bitnet.hal.device_runtime.FUSED_KERNELS), so both give the same bits. Needs common.glsl.

#ifdef USE_FP64
#define ACC double  // the squares' sum (and rope's angles) in double where the device has it
#define ANGLE double
#else
#define ACC float
#define ANGLE float
#endif

// One reduction tree whatever the work-group size: REDUCE_LANES virtual lanes; lane v folds
// VALUE (an expression of IDX) for IDX = v, v + REDUCE_LANES, ... below count, in order, from
// INIT; then lanes v and v + half meet for half = REDUCE_LANES / 2 .. 1. The result is in
// scratch[0] (shared, REDUCE_LANES entries of TYPE) for every invocation; lid, wg: the flat
// local id and size (any size). `precise`: no contraction into the fold.
#define REDUCE_LANES 256u
#define FIXED_REDUCE(scratch, TYPE, INIT, count, IDX, VALUE, OP, lid, wg)     \
    for (uint v_ = (lid); v_ < REDUCE_LANES; v_ += (wg)) {                     \
        precise TYPE s_ = (INIT);                                              \
        for (uint IDX = v_; IDX < (count); IDX += REDUCE_LANES) {              \
            s_ = OP(s_, (VALUE));                                              \
        }                                                                      \
        scratch[v_] = s_;                                                      \
    }                                                                          \
    barrier();                                                                 \
    for (uint h_ = REDUCE_LANES / 2u; h_ > 0u; h_ >>= 1u) {                    \
        for (uint v_ = (lid); v_ < h_; v_ += (wg)) {                           \
            scratch[v_] = OP(scratch[v_], scratch[v_ + h_]);                   \
        }                                                                      \
        barrier();                                                             \
    }

// scale (a float the caller declared) = 1 / sqrt(mean + eps) in f32 for the K values of X
// from `base`, in ggml's order: f32 squares summed in ACC (FIXED_REDUCE's tree), the mean
// rounded to f32. scratch: shared ACC [REDUCE_LANES], reusable afterwards.
#define RMS_SCALE(scale, scratch, X, base, K, eps, lid, wg)                                 \
    FIXED_REDUCE(scratch, ACC, ACC(0), K, k_, ACC(X[(base) + k_] * X[(base) + k_]), OP_ADD, \
                 lid, wg)                                                                    \
    scale = div_rn(1.0, sqrt_rn(float(scratch[0] / ACC(K)) + (eps)));                       \
    barrier();

// One normalized element: (x * scale) * w.
float normed(float x, float scale, float w) {
    precise float v = (x * scale) * w;
    return v;
}

// Per-token int8 (I2_S). 1e-5 as f32 is just below 1e-5, so "m > 1e-5" is the reference's
// float64 "m >= 1e-5"; the double-rounded 127/m equals the correctly rounded f32 quotient.
float i8_scale(float m) {
    return m > 1e-5 ? div_rn(127.0, m) : 12700000.0;
}

int i8_value(float x, float scale) {
    precise float v = x * scale;
    return int(clamp(roundEven(v), -128.0, 127.0));
}

// Q8_K (TQ1_0 / TQ2_0) of a 256-block whose signed element of largest |x| is amax != 0.
float q8k_iscale(float amax) {
    return div_rn(-127.0, amax);
}

int q8k_value(float iscale, float x) {
    precise float v = iscale * x;
    return int(min(roundEven(v), 127.0));
}

float q8k_d(float iscale) {
    return div_rn(1.0, iscale);
}

// Four int8 values in one word, byte i = value i.
uint pack4(int a, int b, int c, int d) {
    return (uint(a) & 0xFFu) | ((uint(b) & 0xFFu) << 8) | ((uint(c) & 0xFFu) << 16)
        | ((uint(d) & 0xFFu) << 24);
}

// The gatings in the reference's order: max(g, 0)^2 * up and g * sigmoid(g) * up.
float relu2_mul_value(float gate, float up) {
    const float r = max(gate, 0.0);
    precise float v = r * r * up;
    return v;
}

float silu_mul_value(float gate, float up) {
    precise float v = gate / (1.0 + exp(-gate)) * up;
    return v;
}

// NEOX rotation of the pair (a, b) by the table entries (c, s), in ANGLE, rounded to f32 once.
vec2 rope_pair(float a, float b, ANGLE c, ANGLE s) {
    const ANGLE da = ANGLE(a);
    const ANGLE db = ANGLE(b);
    precise ANGLE r0 = da * c - db * s;
    precise ANGLE r1 = da * s + db * c;
    return vec2(float(r0), float(r1));
}
