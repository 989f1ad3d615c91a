#version 450
#extension GL_GOOGLE_include_directive : require
// rmsnorm + Q8_K quantization of x [1, K] in every work-group (fused.glsl's prologue), then
// gate and up rows j (TQ1_0 / TQ2_0) together: y[j] = act(gate_j, up_j), act 0 relu2_mul,
// 1 silu_mul (GpuBackend.decode_layer). Rows as linear_tq.comp (matmul.glsl). BLOCKS
// (constant 3) = K / 256.
#include "common.glsl"
#include "norm.glsl"
#include "matmul.glsl"
#include "fused.glsl"

layout(constant_id = 3) const uint BLOCKS = 1;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Nw { float norm[]; };
layout(std430, set = 0, binding = 2) readonly buffer Cg { uint cg[]; };
layout(std430, set = 0, binding = 3) readonly buffer Cu { uint cu[]; };
layout(std430, set = 0, binding = 4) readonly buffer Dg { float dg[]; };
layout(std430, set = 0, binding = 5) readonly buffer Du { float du[]; };
layout(std430, set = 0, binding = 6) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int F;
    int act;
    float eps;
    float out_g;
    float out_u;
} pc;

shared int block_sums[ROWS * TILE_N * BLOCKS];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint m = matmul_row();
    const uint K = uint(pc.K);
    const bool here = m < uint(pc.F);
    NORM_QUANTIZE_Q8K(x, 0u, norm, K, pc.eps, qsh, 0u, qscale, 0u, FLAT_ID, FLAT_SIZE)
    barrier();
    const uint mine = gl_LocalInvocationID.y * TILE_N * BLOCKS;
    if (here) {
        TQ_ROW_SUMS(cg, m * (K / 16u), qsh, K, 0u, 1u, block_sums, mine, BLOCKS, lane)
    }
    barrier();
    float g = 0.0;
    if (here && lane == 0u) {
        BLOCK_SUMS_TO_Y(g, block_sums, mine, dg, m * BLOCKS, qscale, 0u, BLOCKS, pc.out_g)
    }
    barrier();
    if (here) {
        TQ_ROW_SUMS(cu, m * (K / 16u), qsh, K, 0u, 1u, block_sums, mine, BLOCKS, lane)
    }
    barrier();
    if (here && lane == 0u) {
        float u;
        BLOCK_SUMS_TO_Y(u, block_sums, mine, du, m * BLOCKS, qscale, 0u, BLOCKS, pc.out_u)
        y[m] = pc.act == 0 ? relu2_mul_value(g, u) : silu_mul_value(g, u);
    }
}
