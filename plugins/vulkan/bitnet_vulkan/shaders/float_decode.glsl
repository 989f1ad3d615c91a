// Exact dequantization of element k of one float-format row stored as raw on-disk bytes in a
// uint buffer `w` (declared by the includer). FMT is specialization constant 1:
// 0 F32, 1 F16, 2 BF16, 3 Q8_0 (bitnet_vulkan.backend.FLOAT_FORMAT_IDS). Q6_K has its own
// integer path (linear_q6k.comp, embed_q6k.comp).
layout(constant_id = 1) const int FMT = 0;

uint w_byte(uint addr) {
    return byte_at_words(w[addr >> 2], addr);
}

// 16-bit little-endian value at an even byte address.
uint w_u16(uint addr) {
    return (w[addr >> 2] >> (8u * (addr & 2u))) & 0xFFFFu;
}

float decode(uint row_start, uint k) {
    if (FMT == 0) {
        return uintBitsToFloat(w[(row_start >> 2) + k]);
    }
    if (FMT == 1) {
        return f16_to_f32(w_u16(row_start + 2u * k));
    }
    if (FMT == 2) {
        return uintBitsToFloat(w_u16(row_start + 2u * k) << 16);
    }
    // Q8_0: 32-element blocks of f16 d then 32 int8: d * q.
    const uint blk = row_start + (k / 32u) * 34u;
    const float d = f16_to_f32(w_u16(blk));
    const int qv = bitfieldExtract(int(w_byte(blk + 2u + k % 32u)), 0, 8);
    precise float v = d * float(qv);
    return v;
}
