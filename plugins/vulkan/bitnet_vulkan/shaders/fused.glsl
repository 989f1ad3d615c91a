// The fused decode-layer shaders' prologue (bitnet.hal.device_runtime.FUSED_KERNELS): rmsnorm
// of the d-wide input quantized in every work-group into shared memory, with norm.glsl's
// arithmetic and reduction tree (the bits of the rmsnorm + quantize shaders, whatever the
// work-group size). Needs common.glsl and norm.glsl.

#define FUSED_MAX_K 4096  // the widest prologue row (the runtime's fused_max_width)

shared ACC wide[REDUCE_LANES];
shared float narrow[REDUCE_LANES];

// rmsnorm(X[xb ..], W) [K] quantized per token (I2_S): packed int8 words QW[qw .. qw + K/4]
// and the scale S[s] (buffers or shared arrays). Valid after a barrier.
#define NORM_QUANTIZE_I8(X, xb, W, K, eps, QW, qw, S, s, lid, wg)                           \
    {                                                                                       \
        float r_;                                                                           \
        RMS_SCALE(r_, wide, X, xb, K, eps, lid, wg)                                         \
        FIXED_REDUCE(narrow, float, 0.0, K, k_, abs(normed(X[(xb) + k_], r_, W[k_])), OP_MAX, \
                     lid, wg)                                                               \
        const float sc_ = i8_scale(narrow[0]);                                              \
        for (uint w_ = (lid); w_ < (K) / 4u; w_ += (wg)) {                                  \
            const uint e_ = 4u * w_;                                                        \
            QW[(qw) + w_] = pack4(i8_value(normed(X[(xb) + e_], r_, W[e_]), sc_),           \
                                  i8_value(normed(X[(xb) + e_ + 1u], r_, W[e_ + 1u]), sc_), \
                                  i8_value(normed(X[(xb) + e_ + 2u], r_, W[e_ + 2u]), sc_), \
                                  i8_value(normed(X[(xb) + e_ + 3u], r_, W[e_ + 3u]), sc_)); \
        }                                                                                   \
        if ((lid) == 0u) {                                                                  \
            S[s] = sc_;                                                                     \
        }                                                                                   \
    }

// rmsnorm(X[xb ..], W) [K] quantized to Q8_K (TQ): packed words QW[qw ..] and block scales
// D[db .. db + K/256]. An invocation per 256-block scans it in order for the first element of
// largest |x| (quantize_q8k's pick). Valid after a barrier.
#define NORM_QUANTIZE_Q8K(X, xb, W, K, eps, QW, qw, D, db, lid, wg)                         \
    {                                                                                       \
        float r_;                                                                           \
        RMS_SCALE(r_, wide, X, xb, K, eps, lid, wg)                                         \
        for (uint b_ = (lid); b_ < (K) / 256u; b_ += (wg)) {                                \
            const uint base_ = b_ * 256u;                                                   \
            float a_ = -1.0;                                                                \
            uint idx_ = 0u;                                                                 \
            for (uint j_ = 0u; j_ < 256u; j_++) {                                           \
                const float av_ = abs(normed(X[(xb) + base_ + j_], r_, W[base_ + j_]));     \
                if (av_ > a_) {                                                             \
                    a_ = av_;                                                               \
                    idx_ = j_;                                                              \
                }                                                                           \
            }                                                                               \
            const float amax_ = normed(X[(xb) + base_ + idx_], r_, W[base_ + idx_]);        \
            const float is_ = amax_ == 0.0 ? 0.0 : q8k_iscale(amax_);                       \
            for (uint w_ = 0u; w_ < 64u; w_++) {                                            \
                const uint e_ = base_ + 4u * w_;                                            \
                QW[(qw) + e_ / 4u] = pack4(                                                 \
                    q8k_value(is_, normed(X[(xb) + e_], r_, W[e_])),                        \
                    q8k_value(is_, normed(X[(xb) + e_ + 1u], r_, W[e_ + 1u])),              \
                    q8k_value(is_, normed(X[(xb) + e_ + 2u], r_, W[e_ + 2u])),              \
                    q8k_value(is_, normed(X[(xb) + e_ + 3u], r_, W[e_ + 3u])));             \
            }                                                                               \
            D[(db) + b_] = amax_ == 0.0 ? 0.0 : q8k_d(is_);                                 \
        }                                                                                   \
    }

// A matmul prologue's int8 row (packed) and its scales.
shared uint qsh[FUSED_MAX_K / 4];
shared float qscale[FUSED_MAX_K / 256];

// The flat local id and size of a matmul work-group (WG_SIZE lanes x ROWS).
#define FLAT_ID (gl_LocalInvocationID.y * WG_SIZE + gl_LocalInvocationID.x)
#define FLAT_SIZE (WG_SIZE * ROWS)
