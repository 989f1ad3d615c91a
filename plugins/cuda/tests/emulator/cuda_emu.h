// A tiny CUDA-on-CPU emulator for TESTING the bitnet-cuda kernels on hosts without a GPU.
//
// Every CUDA thread of a block is a cooperative fiber (ucontext) on ONE OS thread; blocks run one
// after another, so `__shared__` maps to function-static storage. __syncthreads parks a fiber
// until every live thread of the block arrived; a warp shuffle parks it until every live lane of
// its warp arrived (twice: write the slot, then read). A wait that can never end (a barrier some
// thread skips) aborts with a message. The int8 tensor-core mma (mma_m16n8k32_s8) is a warp
// collective too: every lane posts its fragments, then computes its part of D from all of them
// by the PTX ISA's fragment layout. Float intrinsics map to plain IEEE operations: build with
// -ffp-contract=off so `a * b + c` is not fused, as __fmul_rn / __fadd_rn forbid on the GPU.
// It checks the kernels' logic (indexing, reductions, barriers, epilogue order); it says nothing
// about speed, coalescing, or races the hardware would expose differently.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <ucontext.h>
#include <vector>

#include "cuda_fp16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
// kernels/mma.cuh calls emu::mma_m16n8k32_s8 instead of emitting the PTX instruction
#define BITNET_CUDA_EMULATOR 1

struct dim3_t {
    unsigned x, y, z;
};

struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};

namespace emu {

enum class State { runnable, at_block_barrier, at_warp_sync, done };

struct Fiber {
    ucontext_t context;
    char* stack = nullptr;
    State state = State::runnable;
    unsigned linear = 0;  // threadIdx flattened
    dim3_t thread{0, 0, 0};
};

// One lane's operands of an mma.m16n8k32: A, B and C fragments as the PTX registers hold them.
struct MmaSlot {
    unsigned a[4];
    unsigned b[2];
    int c[4];
    bool posted;
};

struct Block {
    std::vector<Fiber> fibers;
    std::vector<std::uint64_t> slots;  // one shuffle slot per thread
    std::vector<MmaSlot> mma;  // one mma slot per thread
    ucontext_t scheduler;
    Fiber* current = nullptr;
    dim3_t block_idx{0, 0, 0};
    dim3_t block_dim{1, 1, 1};
    dim3_t grid_dim{1, 1, 1};
    const std::function<void()>* kernel = nullptr;
};

inline Block* g_block = nullptr;
constexpr std::size_t kStackBytes = 128 * 1024;

// Fiber stacks, allocated once and reused by every launch (zero-filling them each time was the
// emulator's main cost).
inline char* fiber_stack(unsigned index) {
    static std::vector<std::vector<char>> stacks;
    while (stacks.size() <= index) {
        stacks.emplace_back(kStackBytes);
    }
    return stacks[index].data();
}

inline void park(State why) {
    Fiber* self = g_block->current;
    self->state = why;
    swapcontext(&self->context, &g_block->scheduler);
}

inline void fiber_main() {
    (*g_block->kernel)();
    g_block->current->state = State::done;
    // returning ends the fiber; uc_link brings control back to the scheduler
}

// Release waiting fibers when a whole warp (or block) has arrived. Returns false on deadlock.
inline bool release(Block& b) {
    const unsigned n = b.fibers.size();
    bool any_runnable = false;
    bool block_waiting = true;  // every live fiber sits at the block barrier
    bool any_live = false;
    for (const Fiber& f : b.fibers) {
        if (f.state == State::runnable) {
            any_runnable = true;
        }
        if (f.state != State::done) {
            any_live = true;
            block_waiting = block_waiting && f.state == State::at_block_barrier;
        }
    }
    if (any_runnable || !any_live) {
        return true;
    }
    if (block_waiting) {
        for (Fiber& f : b.fibers) {
            if (f.state == State::at_block_barrier) {
                f.state = State::runnable;
            }
        }
        return true;
    }
    bool released = false;
    for (unsigned w = 0; w * 32 < n; ++w) {
        bool all = true;
        bool some = false;
        for (unsigned t = w * 32; t < n && t < w * 32 + 32; ++t) {
            const State s = b.fibers[t].state;
            if (s == State::done) {
                continue;
            }
            some = true;
            all = all && s == State::at_warp_sync;
        }
        if (some && all) {
            for (unsigned t = w * 32; t < n && t < w * 32 + 32; ++t) {
                if (b.fibers[t].state == State::at_warp_sync) {
                    b.fibers[t].state = State::runnable;
                }
            }
            released = true;
        }
    }
    return released;
}

template <class T>
T shuffle(T v, unsigned src_lane) {
    Fiber* self = g_block->current;
    const unsigned warp_base = self->linear / 32 * 32;
    std::uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    g_block->slots[self->linear] = raw;
    park(State::at_warp_sync);
    T out;
    std::memcpy(&out, &g_block->slots[warp_base + src_lane % 32], sizeof(T));
    park(State::at_warp_sync);
    return out;
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 of the calling lane's warp: d holds C on
// entry and D = A * B + C on return. The fragment layout is the PTX ISA's "Matrix Fragments for
// mma.m16n8k32" (.s8 A / B, .s32 C / D:
// https://docs.nvidia.com/cuda/parallel-thread-execution/#warp-level-matrix-fragment-mma-16832),
// with g = lane >> 2 (groupID), t = lane % 4 (threadID_in_group), element i of a fragment in
// byte i % 4 of register i / 4:
//   A (16 x 32, row)  element i of lane (g, t): row g + 8 * ((i / 4) % 2), col 4 t + i % 4 + 16 * (i / 8)
//   B (32 x 8, col)   element i of lane (g, t): row 4 t + i % 4 + 16 * (i / 4), col g
//   C / D (16 x 8)    element i of lane (g, t): row g + 8 * (i / 2), col 2 t + i % 2
// Here each lane reads A[row][k] and B[k][col] back from the lane and register that hold them.
// Sums wrap modulo 2^32 as the s32 hardware sums do (without .satfinite). tests/
// test_kernels_emulated.py checks this against a numpy model of the same table.
inline void mma_m16n8k32_s8(int (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    Block& blk = *g_block;
    Fiber* self = blk.current;
    const unsigned base = self->linear / 32 * 32;
    if (base + 32 > blk.fibers.size()) {
        std::fprintf(stderr, "cuda_emu: mma.sync in a warp of fewer than 32 threads\n");
        std::abort();
    }
    MmaSlot& mine = blk.mma[self->linear];
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    std::memcpy(mine.c, d, sizeof mine.c);
    mine.posted = true;
    park(State::at_warp_sync);
    for (unsigned l = 0; l < 32; ++l) {
        if (!blk.mma[base + l].posted) {  // .aligned: every lane must execute the same mma
            std::fprintf(stderr, "cuda_emu: mma.sync reached by lane %u without lane %u\n",
                         self->linear % 32, l);
            std::abort();
        }
    }
    const unsigned g = self->linear % 32 / 4;
    const unsigned t = self->linear % 4;
    auto byte = [](unsigned reg, unsigned k) { return int(std::int8_t(reg >> (8 * (k % 4)))); };
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned row = g + 8 * (i / 2);
        const unsigned col = 2 * t + i % 2;
        std::uint32_t sum = std::uint32_t(mine.c[i]);
        for (unsigned k = 0; k < 32; ++k) {
            const MmaSlot& a_lane = blk.mma[base + (row % 8) * 4 + (k % 16) / 4];
            const MmaSlot& b_lane = blk.mma[base + col * 4 + (k % 16) / 4];
            const int av = byte(a_lane.a[row / 8 + 2 * (k / 16)], k);
            const int bv = byte(b_lane.b[k / 16], k);
            sum += std::uint32_t(av * bv);
        }
        d[i] = int(sum);
    }
    park(State::at_warp_sync);  // every lane has read every slot: they may be reused
    mine.posted = false;
}

// Run `kernel` over grid x block, blocks in order, threads as fibers.
inline void launch(dim3_t grid, dim3_t block, const std::function<void()>& kernel) {
    const unsigned threads = block.x * block.y * block.z;
    Block b;
    b.fibers.resize(threads);
    b.slots.resize(threads);
    b.mma.assign(threads, MmaSlot{});
    b.block_dim = block;
    b.grid_dim = grid;
    b.kernel = &kernel;
    for (unsigned t = 0; t < threads; ++t) {
        b.fibers[t].stack = fiber_stack(t);
    }
    g_block = &b;
    for (unsigned bz = 0; bz < grid.z; ++bz) {
        for (unsigned by = 0; by < grid.y; ++by) {
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                b.block_idx = {bx, by, bz};
                for (unsigned t = 0; t < threads; ++t) {
                    Fiber& f = b.fibers[t];
                    f.state = State::runnable;
                    f.linear = t;
                    f.thread = {t % block.x, (t / block.x) % block.y,
                                t / (block.x * block.y)};
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = f.stack;
                    f.context.uc_stack.ss_size = kStackBytes;
                    f.context.uc_link = &b.scheduler;
                    makecontext(&f.context, fiber_main, 0);
                }
                for (;;) {
                    bool ran = false;
                    for (Fiber& f : b.fibers) {
                        if (f.state == State::runnable) {
                            b.current = &f;
                            swapcontext(&b.scheduler, &f.context);
                            ran = true;
                        }
                    }
                    bool live = false;
                    for (const Fiber& f : b.fibers) {
                        live = live || f.state != State::done;
                    }
                    if (!live) {
                        break;
                    }
                    if (!release(b) && !ran) {
                        std::fprintf(stderr, "cuda_emu: deadlock in block (%u,%u,%u)\n", bx, by,
                                     bz);
                        std::abort();
                    }
                }
            }
        }
    }
    g_block = nullptr;
}

}  // namespace emu

#define threadIdx (emu::g_block->current->thread)
#define blockIdx (emu::g_block->block_idx)
#define blockDim (emu::g_block->block_dim)
#define gridDim (emu::g_block->grid_dim)

inline void __syncthreads() {
    emu::park(emu::State::at_block_barrier);
}

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu::shuffle(v, (emu::g_block->current->linear % 32) ^ unsigned(mask));
}

template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
    return emu::shuffle(v, unsigned(src));
}

template <class T>
inline T __ldg(const T* p) {
    return *p;
}

inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) {
        c += int(std::int8_t(a >> (8 * i))) * int(std::int8_t(b >> (8 * i)));
    }
    return c;
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline int min(int a, int b) { return a < b ? a : b; }
// fabsf, fmaxf, fminf, rintf, expf, fmaf, pow, sincos: the C library's (math.h), as on the GPU
#include <math.h>
