// embed: rows of an f16 table [V, K] for int32 ids [n] -> f32 [n, K]; one threadgroup per id.
// Other table formats would take bitnet-cuda's layouts: Q8_0 int8 + per-group f32 scale, Q6_K
// int8 codes + int8 sub-scales + f32 block scale (also what its Q6_K x Q8_K head dot reads).
// WRITTEN, NOT RUN (no Mac was available).
#include <metal_stdlib>
using namespace metal;

kernel void embed_f16(device const half* table [[buffer(0)]],
                      device const int* ids [[buffer(1)]],
                      device float* out [[buffer(2)]],
                      constant int& K [[buffer(3)]],
                      uint i [[threadgroup_position_in_grid]],
                      uint tid [[thread_position_in_threadgroup]],
                      uint threads [[threads_per_threadgroup]])
{
    const ulong src = (ulong)ids[i] * K;
    for (int k = int(tid); k < K; k += int(threads)) {
        out[(ulong)i * K + k] = float(table[src + k]);
    }
}
