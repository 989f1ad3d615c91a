#version 450
#extension GL_GOOGLE_include_directive : require
// rmsnorm + per-token int8 quantization of x [1, K] in every work-group (fused.glsl's
// prologue), then gate and up rows j (I2_S) together: y[j] = act(gate_j, up_j), act 0
// relu2_mul, 1 silu_mul (GpuBackend.decode_layer). Rows as linear_i2s.comp (matmul.glsl).
#include "common.glsl"
#include "norm.glsl"
#include "matmul.glsl"
#include "fused.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Nw { float norm[]; };
layout(std430, set = 0, binding = 2) readonly buffer Cg { uint cg[]; };
layout(std430, set = 0, binding = 3) readonly buffer Cu { uint cu[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int F;
    int act;
    float eps;
    float scale_g;
    float scale_u;
    float out_g;
    float out_u;
} pc;

shared int red[ROWS * TILE_N * WG_SIZE];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint m = matmul_row();
    const uint K = uint(pc.K);
    const bool here = m < uint(pc.F);
    NORM_QUANTIZE_I8(x, 0u, norm, K, pc.eps, qsh, 0u, qscale, 0u, FLAT_ID, FLAT_SIZE)
    barrier();
    const uint mine = gl_LocalInvocationID.y * TILE_N * WG_SIZE;
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (here) {
        I2S_ROW_DOTS(cg, m * (K / 16u), qsh, K, 0u, 1u, acc, lane)
    }
    REDUCE_TILE_LANES(red, mine, acc, lane)
    const int gate = red[mine];
    barrier();
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (here) {
        I2S_ROW_DOTS(cu, m * (K / 16u), qsh, K, 0u, 1u, acc, lane)
    }
    REDUCE_TILE_LANES(red, mine, acc, lane)
    if (here && lane == 0u) {
        const float g = i2s_output(gate, qscale[0], pc.scale_g, pc.out_g);
        const float u = i2s_output(red[mine], qscale[0], pc.scale_u, pc.out_u);
        y[m] = pc.act == 0 ? relu2_mul_value(g, u) : silu_mul_value(g, u);
    }
}
