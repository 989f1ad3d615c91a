#version 450
#extension GL_GOOGLE_include_directive : require
// TQ1_0 / TQ2_0 matmul on Q8_K activations: per 256-block b an exact integer sum, then
// y = sum_b float32(sumi_b) * (dw_b * dy_b) in block order (llama.cpp's generic kernel).
// Codes as in linear_i2s.comp; block scales f32 [M, K/256]. Each lane owns whole blocks (16
// code words) and leaves their sums in shared memory; lane tt of a row then adds token tt's
// blocks in order. BLOCKS (constant 3) = K / 256 of the weight this pipeline serves.
#include "common.glsl"
#include "matmul.glsl"

layout(constant_id = 3) const uint BLOCKS = 1;

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer DW { float wscale[]; };
layout(std430, set = 0, binding = 2) readonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 3) readonly buffer DY { float act_d[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };
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
            for (uint u = b * 16u; u < b * 16u + 16u; u++) {
                const uint word = codes[m * (K / 16u) + u];
                const uint base = (u / 8u) * 128u + (u % 8u) * 4u;
                for (int g = 0; g < 4; g++) {
                    const uint w4 = ternary_packed(word, g);
                    for (uint tt = 0u; tt < TILE_N; tt++) {
                        if (t0 + tt < n) {
                            const uint qi = ((t0 + tt) * K + base + 32u * uint(g)) / 4u;
                            acc[tt] += dot4_packed(w4, q[qi]);
                        }
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
