// Readers of float-format weights as their on-disk rows (bitnet.hal.device_layout.float_rows;
// rows are whole blocks, so a flat element index works across rows) and of Q6_K's split.
// Each decodes to exactly the f32 value bitnet.formats.dequantize gives:
//   F32Weights   f32 as on disk
//   F16Weights   f16 bits as on disk (exact widening)
//   BF16Weights  bf16 bits as on disk (exact widening)
//   Q80Weights   Q8_0 blocks as on disk (f16 d, then 32 int8 codes: 34 bytes); d * code is one
//                f32 rounding, as the reference's.
//   Q6KWeights   Q6_K split for its integer dot (linear_float.cu's linear_q6k): int8 codes,
//                int8 sub-scales per 16 elements, f32 d per 256; (d * sc) * q, two roundings as
//                ggml's dequantize_row_q6_K (d * sc is exact). Only load1 (embed reads it).
// load8 reads 8 consecutive elements starting at a multiple of 8 (one 32/16/8-byte load).
#pragma once

#include "common.cuh"

struct F32Weights {
    const float* w;
    __device__ __forceinline__ float load1(size_t i) const { return __ldg(w + i); }
    __device__ __forceinline__ void load8(size_t i, float out[8]) const {
        const float4 a = __ldg(reinterpret_cast<const float4*>(w + i));
        const float4 b = __ldg(reinterpret_cast<const float4*>(w + i + 4));
        out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
        out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
    }
};

struct F16Weights {
    const unsigned short* w;
    __device__ __forceinline__ float load1(size_t i) const {
        return f16_bits_to_float(__ldg(w + i));
    }
    __device__ __forceinline__ void load8(size_t i, float out[8]) const {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(w + i));
        const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            out[2 * j] = f16_bits_to_float((unsigned short)(words[j] & 0xffffu));
            out[2 * j + 1] = f16_bits_to_float((unsigned short)(words[j] >> 16));
        }
    }
};

struct BF16Weights {
    const unsigned short* w;
    __device__ __forceinline__ float load1(size_t i) const {
        return bf16_bits_to_float(__ldg(w + i));
    }
    __device__ __forceinline__ void load8(size_t i, float out[8]) const {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(w + i));
        const unsigned int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            out[2 * j] = __uint_as_float(words[j] << 16);
            out[2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
        }
    }
};

struct Q80Weights {
    const unsigned char* w;  // 34-byte blocks: f16 d, int8 qs[32]
    __device__ __forceinline__ float scale(size_t i) const {
        return f16_bits_to_float(*reinterpret_cast<const unsigned short*>(w + (i / 32) * 34));
    }
    __device__ __forceinline__ float load1(size_t i) const {
        return __fmul_rn(scale(i), (float)(signed char)w[(i / 32) * 34 + 2 + i % 32]);
    }
    __device__ __forceinline__ void load8(size_t i, float out[8]) const {
        // 8 elements from a multiple of 8 never straddle a block of 32
        const float s = scale(i);
        const unsigned char* c = w + (i / 32) * 34 + 2 + i % 32;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            out[j] = __fmul_rn(s, (float)(signed char)c[j]);
        }
    }
};

struct Q6KWeights {
    const signed char* w;    // codes in -32..31, row-major [rows, K]
    const signed char* sub;  // one per 16 elements: index = flat element / 16
    const float* d;          // one per 256 elements: index = flat element / 256 (K % 256 == 0)
    __device__ __forceinline__ float load1(size_t i) const {
        const float dsc = __fmul_rn(__ldg(d + i / 256), (float)__ldg(sub + i / 16));
        return __fmul_rn(dsc, (float)__ldg(w + i));
    }
};
