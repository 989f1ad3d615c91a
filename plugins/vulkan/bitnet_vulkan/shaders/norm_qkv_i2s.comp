#version 450
#extension GL_GOOGLE_include_directive : require
// rmsnorm + per-token int8 quantization of x [1, K] in every work-group (fused.glsl's
// prologue), then q / k / v (I2_S) as one matmul: rows 0..Mq-1 of y from cq, then Mk rows from
// ck, then Mv from cv (GpuBackend.decode_layer). Rows as linear_i2s.comp (matmul.glsl).
#include "common.glsl"
#include "norm.glsl"
#include "matmul.glsl"
#include "fused.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Nw { float norm[]; };
layout(std430, set = 0, binding = 2) readonly buffer Cq { uint cq[]; };
layout(std430, set = 0, binding = 3) readonly buffer Ck { uint ck[]; };
layout(std430, set = 0, binding = 4) readonly buffer Cv { uint cv[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int Mq;
    int Mk;
    int Mv;
    float eps;
    float scale_q;
    float scale_k;
    float scale_v;
    float out_q;
    float out_k;
    float out_v;
} pc;

shared int red[ROWS * TILE_N * WG_SIZE];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint m = matmul_row();
    const uint K = uint(pc.K);
    const uint Mq = uint(pc.Mq);
    const uint Mk = uint(pc.Mk);
    const uint M = Mq + Mk + uint(pc.Mv);
    NORM_QUANTIZE_I8(x, 0u, norm, K, pc.eps, qsh, 0u, qscale, 0u, FLAT_ID, FLAT_SIZE)
    barrier();
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    float w_scale = pc.scale_q;
    float out_scale = pc.out_q;
    if (m < Mq) {
        I2S_ROW_DOTS(cq, m * (K / 16u), qsh, K, 0u, 1u, acc, lane)
    } else if (m < Mq + Mk) {
        I2S_ROW_DOTS(ck, (m - Mq) * (K / 16u), qsh, K, 0u, 1u, acc, lane)
        w_scale = pc.scale_k;
        out_scale = pc.out_k;
    } else if (m < M) {
        I2S_ROW_DOTS(cv, (m - Mq - Mk) * (K / 16u), qsh, K, 0u, 1u, acc, lane)
        w_scale = pc.scale_v;
        out_scale = pc.out_v;
    }
    const uint mine = gl_LocalInvocationID.y * TILE_N * WG_SIZE;
    REDUCE_TILE_LANES(red, mine, acc, lane)
    if (m < M && lane == 0u) {
        y[m] = i2s_output(red[mine], qscale[0], w_scale, out_scale);
    }
}
