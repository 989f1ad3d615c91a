// linear_ternary for Metal: I2_S (per-token int8 activations) and TQ2_0 (Q8_K activations).
// Same numerics and the same weight layouts as bitnet-cuda (bitnet_cuda/layout.py): I2_S codes
// as on disk (128-element groups, first 32 elements in bits 7:6), TQ2_0 code bytes with the f16
// block scales split into f32. One SIMD group (32 threads) per output row, ROWS_PER_GROUP rows
// per threadgroup; grid = (ceil(M / ROWS_PER_GROUP) threadgroups) x (n tokens).
// WRITTEN, NOT RUN: no Mac was available. See plugins/metal/README.md.
#include <metal_stdlib>
using namespace metal;

#define QK_K 256
#define ROWS_PER_GROUP 8

// Per-token absmax int8 (bitnet.cpp). One threadgroup of 256 threads per token row.
kernel void quantize_per_token_i8(device const float* x [[buffer(0)]],
                                  device char* q [[buffer(1)]],
                                  device float* scale [[buffer(2)]],
                                  device int* qsum [[buffer(3)]],
                                  constant int& K [[buffer(4)]],
                                  uint row [[threadgroup_position_in_grid]],
                                  uint tid [[thread_position_in_threadgroup]],
                                  uint lane [[thread_index_in_simdgroup]],
                                  uint sg [[simdgroup_index_in_threadgroup]])
{
    threadgroup float tg_max[8];
    threadgroup int tg_sum[8];
    device const float* xr = x + (ulong)row * K;
    float amax = 0.0f;
    for (int k = tid; k < K; k += 256) {
        amax = max(amax, fabs(xr[k]));
    }
    amax = simd_max(amax);
    if (lane == 0) {
        tg_max[sg] = amax;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    float m = tg_max[0];
    for (int w = 1; w < 8; ++w) {
        m = max(m, tg_max[w]);
    }
    // Metal has no double: 127 / max(1e-5, m) in f32 can differ from the reference's float64
    // division in the last ulp of s. A bit-exact port needs a correctly rounded f32 division
    // (e.g. one Newton step with an exactness check); left for the contributor with a Mac.
    const float s = 127.0f / max(1e-5f, m);
    int sum = 0;
    for (int k = tid; k < K; k += 256) {
        const float v = clamp(rint(xr[k] * s), -128.0f, 127.0f);
        q[(ulong)row * K + k] = char(v);
        sum += int(v);
    }
    sum = simd_sum(sum);
    if (lane == 0) {
        tg_sum[sg] = sum;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid == 0) {
        int total = 0;
        for (int w = 0; w < 8; ++w) {
            total += tg_sum[w];
        }
        scale[row] = s;
        qsum[row] = total;
    }
}

// ggml Q8_K: one threadgroup of 256 threads per 256-element block; grid (K / 256, n).
kernel void quantize_q8_k(device const float* x [[buffer(0)]],
                          device char* q [[buffer(1)]],
                          device float* d [[buffer(2)]],
                          device int* bsum [[buffer(3)]],
                          constant int& K [[buffer(4)]],
                          uint2 group [[threadgroup_position_in_grid]],
                          uint tid [[thread_position_in_threadgroup]],
                          uint lane [[thread_index_in_simdgroup]],
                          uint sg [[simdgroup_index_in_threadgroup]])
{
    threadgroup float tg_a[8];
    threadgroup int tg_i[8];
    threadgroup int tg_sum[8];
    const int nblk = K / QK_K;
    const ulong base = (ulong)group.y * K + (ulong)group.x * QK_K;
    const float v = x[base + tid];
    // (|x|, index): larger |x| wins, ties go to the lower index (ggml's first maximum)
    float a = fabs(v);
    int idx = int(tid);
    for (ushort offset = 16; offset > 0; offset >>= 1) {
        const float oa = simd_shuffle_xor(a, offset);
        const int oi = simd_shuffle_xor(idx, offset);
        if (oa > a || (oa == a && oi < idx)) {
            a = oa;
            idx = oi;
        }
    }
    if (lane == 0) {
        tg_a[sg] = a;
        tg_i[sg] = idx;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int w = 0; w < 8; ++w) {
        if (tg_a[w] > a || (tg_a[w] == a && tg_i[w] < idx)) {
            a = tg_a[w];
            idx = tg_i[w];
        }
    }
    const float maxv = x[base + idx];
    int qi = 0;
    float dv = 0.0f;
    if (maxv != 0.0f) {
        const float iscale = -127.0f / maxv;
        qi = min(127, int(rint(iscale * v)));
        dv = 1.0f / iscale;
    }
    q[base + tid] = char(qi);
    const int sum = simd_sum(qi);
    if (lane == 0) {
        tg_sum[sg] = sum;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid == 0) {
        int total = 0;
        for (int w = 0; w < 8; ++w) {
            total += tg_sum[w];
        }
        d[group.y * nblk + group.x] = dv;
        bsum[group.y * nblk + group.x] = total;
    }
}

// Four 2-bit codes of `word` at `shift` times four int8 activations.
static inline int dot4(uint word, int shift, char4 qv) {
    const uint c = (word >> shift) & 0x03030303u;
    const int4 codes = int4(c & 0xffu, (c >> 8) & 0xffu, (c >> 16) & 0xffu, c >> 24);
    const int4 acts = int4(qv);
    return codes.x * acts.x + codes.y * acts.y + codes.z * acts.z + codes.w * acts.w;
}

// 16 code bytes (4 words) of a 32-byte group against activations qt (element base + byte).
static inline int dot_codes16(uint4 pk, device const char* qt, bool high_first) {
    int acc = 0;
    for (int g = 0; g < 4; ++g) {
        const int shift = high_first ? 6 - 2 * g : 2 * g;
        device const char4* qv = (device const char4*)(qt + 32 * g);
        acc += dot4(pk.x, shift, qv[0]);
        acc += dot4(pk.y, shift, qv[1]);
        acc += dot4(pk.z, shift, qv[2]);
        acc += dot4(pk.w, shift, qv[3]);
    }
    return acc;
}

kernel void linear_i2s(device const uint4* w [[buffer(0)]],
                       device const char* q [[buffer(1)]],
                       device const float* act_scale [[buffer(2)]],
                       device const int* act_sum [[buffer(3)]],
                       device float* y [[buffer(4)]],
                       constant float& w_scale [[buffer(5)]],
                       constant float& out_scale [[buffer(6)]],
                       constant int& M [[buffer(7)]],
                       constant int& K [[buffer(8)]],
                       uint2 group [[threadgroup_position_in_grid]],
                       uint lane [[thread_index_in_simdgroup]],
                       uint sg [[simdgroup_index_in_threadgroup]])
{
    const int row = int(group.x) * ROWS_PER_GROUP + int(sg);
    const int tok = int(group.y);
    if (row >= M) {
        return;
    }
    const int nvec = K / 64;
    int acc = 0;
    for (int u = int(lane); u < nvec; u += 32) {
        const int base = (u >> 1) * 128 + (u & 1) * 16;
        acc += dot_codes16(w[(ulong)row * nvec + u], q + (ulong)tok * K + base, true);
    }
    acc = simd_sum(acc);
    if (lane == 0) {
        const int dot = acc - act_sum[tok];
        float yv = (float(dot) / act_scale[tok]) * w_scale;
        if (out_scale != 1.0f) {
            yv *= out_scale;
        }
        y[(ulong)tok * M + row] = yv;
    }
}

kernel void linear_tq(device const uint4* w [[buffer(0)]],
                      device const float* w_d [[buffer(1)]],
                      device const char* q [[buffer(2)]],
                      device const float* act_d [[buffer(3)]],
                      device const int* act_bsum [[buffer(4)]],
                      device float* y [[buffer(5)]],
                      constant float& out_scale [[buffer(6)]],
                      constant int& M [[buffer(7)]],
                      constant int& K [[buffer(8)]],
                      uint2 group [[threadgroup_position_in_grid]],
                      uint lane [[thread_index_in_simdgroup]],
                      uint sg [[simdgroup_index_in_threadgroup]])
{
    const int row = int(group.x) * ROWS_PER_GROUP + int(sg);
    const int tok = int(group.y);
    if (row >= M) {
        return;
    }
    const int nblk = K / QK_K;
    const int nvec = nblk * 4;
    float acc = 0.0f;
    for (int u0 = 0; u0 < nvec; u0 += 32) {
        const int u = u0 + int(lane);
        int part = 0;
        if (u < nvec) {
            const int base = (u >> 2) * QK_K + ((u >> 1) & 1) * 128 + (u & 1) * 16;
            part = dot_codes16(w[(ulong)row * nvec + u], q + (ulong)tok * K + base, false);
        }
        part += simd_shuffle_xor(part, 1);
        part += simd_shuffle_xor(part, 2);
        // blocks in order, as the reference accumulates them (Metal may contract to FMA unless
        // the library is built with fast math off: MTLCompileOptions.fastMathEnabled = NO)
        for (int j = 0; j < 8; ++j) {
            const int b = u0 / 4 + j;
            if (b >= nblk) {
                break;
            }
            const int raw = simd_shuffle(part, ushort(4 * j));
            const int sumi = raw - act_bsum[tok * nblk + b];
            acc += float(sumi) * (w_d[(ulong)row * nblk + b] * act_d[tok * nblk + b]);
        }
    }
    if (lane == 0) {
        y[(ulong)tok * M + row] = out_scale != 1.0f ? acc * out_scale : acc;
    }
}
