#version 450
#extension GL_GOOGLE_include_directive : require
// Q6_K matmul as llama.cpp runs a Q6_K head (hal KernelBackend.linear_float): Q8_K activations
// (quantize_q8k.comp), per 256-block b the exact integer isum_b = sum_j sc_j * sum_{k in
// 16-element sub-block j} q6_k * q8_k (|isum_b| < 2^31), then y = sum_b float32(isum_b) *
// (dw_b * dy_b) in block order. Weights split at load (bitnet.formats.device_layout.
// split_q6_k_ints): codes int8 [M, K] in -32..31 and sub-block scales int8 [M, K/16], 4 per
// word; block scales f32 [M, K/256]. Each lane owns whole blocks and leaves their sums in
// shared memory; lane tt of a row then adds token tt's blocks in order (as linear_tq.comp).
// BLOCKS (constant 3) = K / 256 of the weight this pipeline serves.
#include "common.glsl"
#include "matmul.glsl"

layout(constant_id = 3) const uint BLOCKS = 1;

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer SC { uint sub[]; };
layout(std430, set = 0, binding = 2) readonly buffer DW { float wscale[]; };
layout(std430, set = 0, binding = 3) readonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 4) readonly buffer DY { float act_d[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int n;
    int M;
    float out_scale;
} pc;

shared int block_sums[ROWS * TILE_N * BLOCKS];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint r = gl_LocalInvocationID.y;
    const uint m = matmul_row();
    const uint t0 = gl_WorkGroupID.y * TILE_N;
    const uint K = uint(pc.K);
    const uint n = uint(pc.n);
    const uint M = uint(pc.M);
    const uint mine = r * TILE_N * BLOCKS;
    if (m < M) {
        for (uint b = lane; b < BLOCKS; b += WG_SIZE) {
            int acc[TILE_N];
            for (int tt = 0; tt < TILE_N; tt++) {
                acc[tt] = 0;
            }
            for (uint j = 0u; j < 16u; j++) {
                const uint s = m * (K / 16u) + b * 16u + j;  // sub-block index in the weight
                const int sc = sbyte(sub[s / 4u], int(s % 4u));
                const uint wi = (m * K + b * 256u + j * 16u) / 4u;  // its first code word
                for (uint tt = 0u; tt < TILE_N; tt++) {
                    if (t0 + tt < n) {
                        const uint qi = ((t0 + tt) * K + b * 256u + j * 16u) / 4u;
                        int part = dot4_packed(codes[wi], q[qi]);
                        part += dot4_packed(codes[wi + 1u], q[qi + 1u]);
                        part += dot4_packed(codes[wi + 2u], q[qi + 2u]);
                        part += dot4_packed(codes[wi + 3u], q[qi + 3u]);
                        acc[tt] += sc * part;
                    }
                }
            }
            for (uint tt = 0u; tt < TILE_N; tt++) {
                block_sums[mine + tt * BLOCKS + b] = acc[tt];
            }
        }
    }
    barrier();
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const uint t = t0 + lane;
        precise float sum = 0.0;
        for (uint b = 0u; b < BLOCKS; b++) {
            precise float d = wscale[m * BLOCKS + b] * act_d[t * BLOCKS + b];
            sum += float(block_sums[mine + lane * BLOCKS + b]) * d;
        }
        if (pc.out_scale != 1.0) {
            sum = sum * pc.out_scale;
        }
        y[t * M + m] = sum;
    }
}
