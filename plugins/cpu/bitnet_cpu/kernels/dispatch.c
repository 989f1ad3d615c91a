/* dispatch.c: name -> kernel table. The choice of name (from the CPU feature probe) is made in
 * Python (bitnet_cpu/dispatch.py) so BITNET_CPU_FEATURES can force any path in tests. */
#include <string.h>

#include "bitnet_cpu.h"

const bn_kernels *bn_kernels_get(const char *name)
{
    if (strcmp(name, "generic") == 0) {
        return &bn_kernels_generic;
    }
#if defined(__x86_64__) || defined(_M_X64)
    if (strcmp(name, "avx2") == 0) {
        return &bn_kernels_avx2;
    }
    if (strcmp(name, "avx512") == 0) {
        return &bn_kernels_avx512;
    }
#endif
#if defined(__aarch64__)
    if (strcmp(name, "neon") == 0) {
        return &bn_kernels_neon;
    }
#endif
    return NULL;
}
