// Int8 tensor-core multiply-accumulate for the prompt GEMMs (linear_mma.cu): sm_80 and newer.
//
// D = A * B + C, A 16x32 s8 (row-major), B 32x8 s8 (column-major), C/D 16x8 s32, one warp:
// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32. Integer products and sums are exact (no
// .satfinite: nothing here comes near 2^31). Which lane holds which elements is the PTX ISA's
// "Matrix Fragments for mma.m16n8k32" (.s8 A and B, .s32 C/D;
// https://docs.nvidia.com/cuda/parallel-thread-execution/#warp-level-matrix-fragment-mma-16832,
// figures "MMA .m16n8k32 fragment layout for matrix A / B / accumulator C/D"); with
// g = lane >> 2 (groupID) and t = lane & 3 (threadID_in_group), byte j of a register (low to
// high) holds:
//   A  a[0]: row g,   k 4t + j        a[1]: row g + 8, k 4t + j
//      a[2]: row g,   k 16 + 4t + j   a[3]: row g + 8, k 16 + 4t + j
//   B  b[0]: column g, k 4t + j       b[1]: column g, k 16 + 4t + j
//   C/D  c[0], c[1]: row g, columns 2t, 2t + 1;  c[2], c[3]: row g + 8, columns 2t, 2t + 1
// All 32 lanes of the warp execute it together (.sync.aligned).
//
// In the CPU emulator (tests/emulator/cuda_emu.h defines BITNET_CUDA_EMULATOR) a host model of
// the warp collective stands in; nvcc emits the instruction itself.
#pragma once

__device__ __forceinline__ void mma_s8_m16n8k32(int (&d)[4], const unsigned int (&a)[4],
                                                const unsigned int (&b)[2]) {
#ifdef BITNET_CUDA_EMULATOR
    emu::mma_m16n8k32_s8(d, a, b);
#else
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
