// embed: rows of a float-format table [V, K] for int32 ids [n] -> f32 [n, K], decoded exactly
// (the same device layouts as linear_float, so a tied embedding is loaded once).
// Grid n (one block per token), EMBED_THREADS threads striding over K.
#include "float_weights.cuh"

#define EMBED_THREADS 256

template <class W>
__device__ __forceinline__ void embed_rows(const W wt, const int* __restrict__ ids,
                                           float* __restrict__ out, int K)
{
    const int i = blockIdx.x;
    const size_t src = (size_t)ids[i] * K;  // ids were range-checked by the engine
    float* dst = out + (size_t)i * K;
    for (int k = threadIdx.x; k < K; k += EMBED_THREADS) {
        dst[k] = wt.load1(src + k);
    }
}

extern "C" __global__ void __launch_bounds__(EMBED_THREADS) embed_f32(
    const float* __restrict__ w, const int* __restrict__ ids, float* __restrict__ out, int K)
{
    embed_rows(F32Weights{w}, ids, out, K);
}

extern "C" __global__ void __launch_bounds__(EMBED_THREADS) embed_f16(
    const unsigned short* __restrict__ w, const int* __restrict__ ids, float* __restrict__ out,
    int K)
{
    embed_rows(F16Weights{w}, ids, out, K);
}

extern "C" __global__ void __launch_bounds__(EMBED_THREADS) embed_bf16(
    const unsigned short* __restrict__ w, const int* __restrict__ ids, float* __restrict__ out,
    int K)
{
    embed_rows(BF16Weights{w}, ids, out, K);
}

extern "C" __global__ void __launch_bounds__(EMBED_THREADS) embed_i8g(
    const signed char* __restrict__ w, const float* __restrict__ scale, int group,
    const int* __restrict__ ids, float* __restrict__ out, int K)
{
    embed_rows(I8GWeights{w, scale, group}, ids, out, K);
}

extern "C" __global__ void __launch_bounds__(EMBED_THREADS) embed_q6k(
    const signed char* __restrict__ w, const signed char* __restrict__ sub,
    const float* __restrict__ d, const int* __restrict__ ids, float* __restrict__ out, int K)
{
    embed_rows(Q6KWeights{w, sub, d}, ids, out, K);
}
