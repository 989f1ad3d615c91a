#version 450
#extension GL_GOOGLE_include_directive : require
// One token's TQ1_0 / TQ2_0 matmul with the residual add as its epilogue: y = h + W x for x
// quantized to Q8_K (q int8 [K], 4 per word; d [K/256]) (GpuBackend.decode_layer). As
// linear_tq.comp; BLOCKS (constant 3) = K / 256.
#include "common.glsl"
#include "matmul.glsl"

layout(constant_id = 3) const uint BLOCKS = 1;

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer DW { float wscale[]; };
layout(std430, set = 0, binding = 2) readonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 3) readonly buffer DY { float act_d[]; };
layout(std430, set = 0, binding = 4) readonly buffer H { float h[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int M;
    float out_scale;
} pc;

shared int block_sums[ROWS * TILE_N * BLOCKS];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint m = matmul_row();
    const uint K = uint(pc.K);
    const uint M = uint(pc.M);
    const uint mine = gl_LocalInvocationID.y * TILE_N * BLOCKS;
    if (m < M) {
        TQ_ROW_SUMS(codes, m * (K / 16u), q, K, 0u, 1u, block_sums, mine, BLOCKS, lane)
    }
    barrier();
    if (m < M && lane == 0u) {
        float sum;
        BLOCK_SUMS_TO_Y(sum, block_sums, mine, wscale, m * BLOCKS, act_d, 0u, BLOCKS,
                        pc.out_scale)
        y[m] = h[m] + sum;
    }
}
