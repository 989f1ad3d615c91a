#version 450
#extension GL_GOOGLE_include_directive : require
// TQ1_0 / TQ2_0 matmul on Q8_K activations: per 256-block b an exact integer sum, then
// y = sum_b float32(sumi_b) * (dw_b * dy_b) in block order (llama.cpp's generic kernel).
// Codes as in linear_i2s.comp; block scales f32 [M, K/256]. Each lane owns whole blocks (16
// code words) and leaves their sums in shared memory; lane tt of a row then adds token tt's
// blocks in order (matmul.glsl's TQ_ROW_SUMS and BLOCK_SUMS_TO_Y, shared with the fused
// decode-layer shaders). BLOCKS (constant 3) = K / 256 of the weight this pipeline serves.
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
        TQ_ROW_SUMS(codes, m * (K / 16u), q, K, t0, n, block_sums, mine, BLOCKS, lane)
    }
    barrier();
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const uint t = t0 + lane;
        float sum;
        BLOCK_SUMS_TO_Y(sum, block_sums, mine + lane * BLOCKS, wscale, m * BLOCKS, act_d,
                        t * BLOCKS, BLOCKS, pc.out_scale)
        y[t * M + m] = sum;
    }
}
