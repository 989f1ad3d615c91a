// embed: rows of a float-format table [V, K] for int32 ids [n] -> f32 [n, K], decoded exactly:
// embed_<fmt> reads on-disk rows (the same bytes as linear_float, so a tied embedding is loaded
// once), embed_q6_k the Q6_K split. Arguments as bitnet.hal.device_runtime.KERNELS orders them.
// Grid: one thread per element, (K, n) items in blocks of EMBED_THREADS along K.
#include "float_weights.cuh"

#define EMBED_THREADS 256

template <class W>
__device__ __forceinline__ void embed_item(const W wt, const int* __restrict__ ids,
                                           float* __restrict__ out, int K)
{
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y;
    if (k < K) {
        out[(size_t)i * K + k] = wt.load1((size_t)ids[i] * K + k);  // ids checked by the engine
    }
}

#define EMBED_ENTRY(NAME, W, WTYPE)                                                            \
    extern "C" __global__ void __launch_bounds__(EMBED_THREADS) NAME(                          \
        const WTYPE* __restrict__ w, const int* __restrict__ ids, float* __restrict__ out,       \
        int row_bytes, int K)                                                                  \
    {                                                                                          \
        embed_item(W{w}, ids, out, K);                                                         \
    }

EMBED_ENTRY(embed_f32, F32Weights, float)
EMBED_ENTRY(embed_f16, F16Weights, unsigned short)
EMBED_ENTRY(embed_bf16, BF16Weights, unsigned short)
EMBED_ENTRY(embed_q8_0, Q80Weights, unsigned char)

extern "C" __global__ void __launch_bounds__(EMBED_THREADS) embed_q6_k(
    const signed char* __restrict__ w, const signed char* __restrict__ sub,
    const float* __restrict__ d, const int* __restrict__ ids, float* __restrict__ out, int K)
{
    embed_item(Q6KWeights{w, sub, d}, ids, out, K);
}
