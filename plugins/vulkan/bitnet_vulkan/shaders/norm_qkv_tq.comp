#version 450
#extension GL_GOOGLE_include_directive : require
// rmsnorm + Q8_K quantization of x [1, K] in every work-group (fused.glsl's prologue), then
// q / k / v (TQ1_0 / TQ2_0) as one matmul: rows 0..Mq-1 of y from cq, then Mk rows from ck,
// then Mv from cv (GpuBackend.decode_layer). Rows as linear_tq.comp (matmul.glsl). BLOCKS
// (constant 3) = K / 256.
#include "common.glsl"
#include "norm.glsl"
#include "matmul.glsl"
#include "fused.glsl"

layout(constant_id = 3) const uint BLOCKS = 1;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Nw { float norm[]; };
layout(std430, set = 0, binding = 2) readonly buffer Cq { uint cq[]; };
layout(std430, set = 0, binding = 3) readonly buffer Ck { uint ck[]; };
layout(std430, set = 0, binding = 4) readonly buffer Cv { uint cv[]; };
layout(std430, set = 0, binding = 5) readonly buffer Dq { float dq[]; };
layout(std430, set = 0, binding = 6) readonly buffer Dk { float dk[]; };
layout(std430, set = 0, binding = 7) readonly buffer Dv { float dv[]; };
layout(std430, set = 0, binding = 8) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int Mq;
    int Mk;
    int Mv;
    float eps;
    float out_q;
    float out_k;
    float out_v;
} pc;

shared int block_sums[ROWS * TILE_N * BLOCKS];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint m = matmul_row();
    const uint K = uint(pc.K);
    const uint Mq = uint(pc.Mq);
    const uint Mk = uint(pc.Mk);
    const uint M = Mq + Mk + uint(pc.Mv);
    NORM_QUANTIZE_Q8K(x, 0u, norm, K, pc.eps, qsh, 0u, qscale, 0u, FLAT_ID, FLAT_SIZE)
    barrier();
    const uint mine = gl_LocalInvocationID.y * TILE_N * BLOCKS;
    if (m < Mq) {
        TQ_ROW_SUMS(cq, m * (K / 16u), qsh, K, 0u, 1u, block_sums, mine, BLOCKS, lane)
    } else if (m < Mq + Mk) {
        TQ_ROW_SUMS(ck, (m - Mq) * (K / 16u), qsh, K, 0u, 1u, block_sums, mine, BLOCKS, lane)
    } else if (m < M) {
        TQ_ROW_SUMS(cv, (m - Mq - Mk) * (K / 16u), qsh, K, 0u, 1u, block_sums, mine, BLOCKS,
                    lane)
    }
    barrier();
    if (m < M && lane == 0u) {
        float out_value;
        if (m < Mq) {
            BLOCK_SUMS_TO_Y(out_value, block_sums, mine, dq, m * BLOCKS, qscale, 0u, BLOCKS,
                            pc.out_q)
        } else if (m < Mq + Mk) {
            BLOCK_SUMS_TO_Y(out_value, block_sums, mine, dk, (m - Mq) * BLOCKS, qscale, 0u,
                            BLOCKS, pc.out_k)
        } else {
            BLOCK_SUMS_TO_Y(out_value, block_sums, mine, dv, (m - Mq - Mk) * BLOCKS, qscale, 0u,
                            BLOCKS, pc.out_v)
        }
        y[m] = out_value;
    }
}
