#version 450
#extension GL_GOOGLE_include_directive : require
// I2_S matmul on per-token int8 activations: y [n, M] = float32(float32(dot) / s_t) * wscale
// [* out_scale], dot = sum((code - 1) * q) exact. Codes uint8 [M, K/4] in the I2_S interleave
// (bitnet.hal.device_layout); the row dots and the epilogue are matmul.glsl's (shared with the
// fused decode-layer shaders). Lanes stride over a row's words; int sums meet in shared.
#include "common.glsl"
#include "matmul.glsl"

layout(std430, set = 0, binding = 0) readonly buffer W { uint codes[]; };
layout(std430, set = 0, binding = 1) readonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 2) readonly buffer S { float act_scale[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform Params {
    int K;
    int n;
    int M;
    float wscale;
    float out_scale;
} pc;

shared int red[ROWS * TILE_N * WG_SIZE];

void main() {
    const uint lane = gl_LocalInvocationID.x;
    const uint r = gl_LocalInvocationID.y;
    const uint m = matmul_row();
    const uint t0 = gl_WorkGroupID.y * TILE_N;
    const uint K = uint(pc.K);
    const uint n = uint(pc.n);
    const uint M = uint(pc.M);
    int acc[TILE_N];
    for (int tt = 0; tt < TILE_N; tt++) {
        acc[tt] = 0;
    }
    if (m < M) {
        I2S_ROW_DOTS(codes, m * (K / 16u), q, K, t0, n, acc, lane)
    }
    const uint mine = r * TILE_N * WG_SIZE;
    REDUCE_TILE_LANES(red, mine, acc, lane)
    if (m < M && lane < TILE_N && t0 + lane < n) {
        const uint t = t0 + lane;
        y[t * M + m] = i2s_output(red[mine + lane * WG_SIZE], act_scale[t], pc.wscale,
                                  pc.out_scale);
    }
}
