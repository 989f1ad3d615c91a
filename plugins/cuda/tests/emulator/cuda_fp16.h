// Host stand-in for <cuda_fp16.h> used by the CPU emulator (see cuda_emu.h). f16 via _Float16.
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
    std::uint16_t bits;
};

inline float __half2float(__half h) {
    _Float16 v;
    std::memcpy(&v, &h.bits, 2);
    return static_cast<float>(v);
}

inline __half __float2half_rn(float f) {
    _Float16 v = static_cast<_Float16>(f);  // round to nearest even
    __half h;
    std::memcpy(&h.bits, &v, 2);
    return h;
}

inline __half __ushort_as_half(unsigned short bits) {
    return __half{bits};
}
