#version 450
#extension GL_GOOGLE_include_directive : require
// One token's I2_S matmul with the residual add as its epilogue: y = h + W x for x quantized
// per token (q int8 [K], 4 per word; s [1]) (GpuBackend.decode_layer). As linear_i2s.comp.
#include "common.glsl"
#include "matmul.glsl"

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 2) readonly buffer S { float act_scale[]; };
layout(std430, set = 0, binding = 3) readonly buffer H { float h[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int M;
    float wscale;
    float out_scale;
} pc;

shared int red[ROWS * TILE_N * WG_SIZE];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint m = matmul_row();
    const uint K = uint(pc.K);
    const uint M = uint(pc.M);
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (m < M) {
        I2S_ROW_DOTS(codes, m * (K / 16u), q, K, 0u, 1u, acc, lane)
    }
    const uint mine = gl_LocalInvocationID.y * TILE_N * WG_SIZE;
    REDUCE_TILE_LANES(red, mine, acc, lane)
    if (m < M && lane == 0u) {
        y[m] = h[m] + i2s_output(red[mine], act_scale[0], pc.wscale, pc.out_scale);
    }
}
