// One warp through kernels/mma.cuh's mma_s8_m16n8k32 with the fragments given lane by lane, so
// tests/test_kernels_emulated.py can check the emulator's mma against a numpy model of the PTX
// ISA's fragment layout. a: [32][4] registers, b: [32][2], cd: [32][4] (C in, D out).
#include "cuda_emu.h"
#include "mma.cuh"

extern "C" void emu_mma_probe(const unsigned* a, const unsigned* b, int* cd) {
    emu::launch({1, 1, 1}, {32, 1, 1}, [&]() {
        const unsigned lane = threadIdx.x;
        const unsigned ra[4] = {a[4 * lane], a[4 * lane + 1], a[4 * lane + 2], a[4 * lane + 3]};
        const unsigned rb[2] = {b[2 * lane], b[2 * lane + 1]};
        int d[4] = {cd[4 * lane], cd[4 * lane + 1], cd[4 * lane + 2], cd[4 * lane + 3]};
        mma_s8_m16n8k32(d, ra, rb);
        for (int i = 0; i < 4; ++i) {
            cd[4 * lane + i] = d[i];
        }
    });
}
