// Activation quantization for linear_ternary, on the device (bitnet.formats.activations is the
// bit-level reference; the element arithmetic is common.cl's, shared with decode_layer.cl).

// Per-token int8 (bitnet.cpp, I2_S). One work-group per token: x [n, K] f32 -> q [n, K] int8,
// s [n] f32 with s = float32(127 / max(1e-5, max|x|)).
__kernel void quantize_per_token_i8(__global const float* x, const int K,
                                    __global char* q, __global float* s,
                                    __local float* scratch) {
    const int t = get_group_id(0);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    __global const float* row = x + (size_t)t * K;
    float m = 0.0f;
    for (int k = lid; k < K; k += wg) {
        m = fmax(m, fabs(row[k]));
    }
    REDUCE(scratch, m, lid, wg, OP_MAX);
    m = scratch[0];
    const float scale = i8_scale(m);
    for (int k = lid; k < K; k += wg) {
        q[(size_t)t * K + k] = i8_value(row[k], scale);
    }
    if (lid == 0) {
        s[t] = scale;
    }
}

// Q8_K (llama.cpp, TQ1_0/TQ2_0). Work-group (b, t) quantizes 256-block b of token t:
// q [n, K] int8 and d [n, K/256] f32 with d = 1 / (-127 / amax), amax the signed element of
// largest magnitude (the first one on ties).
__kernel void quantize_q8_k(__global const float* x, const int K,
                            __global char* q, __global float* d,
                            __local float* best_abs, __local int* best_idx) {
    const int b = get_group_id(0);
    const int t = get_group_id(1);
    const int lid = get_local_id(0);
    const int wg = get_local_size(0);
    const size_t base = (size_t)t * K + (size_t)b * 256;
    float a = -1.0f;
    int idx = 0;
    for (int j = lid; j < 256; j += wg) {
        float v = fabs(x[base + j]);
        if (v > a) {  // strictly greater keeps the first index within this work-item's stride
            a = v;
            idx = j;
        }
    }
    best_abs[lid] = a;
    best_idx[lid] = idx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = wg / 2; stride > 0; stride /= 2) {
        if (lid < stride) {
            float other = best_abs[lid + stride];
            int other_idx = best_idx[lid + stride];
            bool wins = other > best_abs[lid] ||
                        (other == best_abs[lid] && other_idx < best_idx[lid]);
            if (wins) {
                best_abs[lid] = other;
                best_idx[lid] = other_idx;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float amax = x[base + best_idx[0]];
    const int nb = K / 256;
    if (amax == 0.0f) {
        for (int j = lid; j < 256; j += wg) {
            q[base + j] = 0;
        }
        if (lid == 0) {
            d[(size_t)t * nb + b] = 0.0f;
        }
        return;
    }
    const float iscale = q8k_iscale(amax);
    for (int j = lid; j < 256; j += wg) {
        q[base + j] = q8k_value(iscale, x[base + j]);
    }
    if (lid == 0) {
        d[(size_t)t * nb + b] = q8k_d(iscale);
    }
}
