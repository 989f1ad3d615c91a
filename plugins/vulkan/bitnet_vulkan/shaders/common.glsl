// Shared by every shader: work-group size, exact float helpers, f16 conversion, reductions.
// The work-group width is specialization constant 0, chosen by the host from the device's
// subgroup size and limits (bitnet_vulkan.devices); every reduction assumes a power of two.
// Each shader declares its local size: layout(local_size_x_id = 0) in; (matmuls add y).
layout(constant_id = 0) const uint WG_SIZE = 64;

// Exact residual a - q*b for q close to a/b, from correctly rounded mul/add only (Vulkan may
// implement fma() as a separate multiply and add). `precise` forbids contraction.
float div_residual(float a, float q, float b) {
    precise float p = q * b;
    precise float cq = 4097.0 * q;
    precise float qh = cq - (cq - q);
    precise float ql = q - qh;
    precise float cb = 4097.0 * b;
    precise float bh = cb - (cb - b);
    precise float bl = b - bh;
    precise float err = ((qh * bh - p) + qh * bl + ql * bh) + ql * bl;
    precise float r = (a - p) - err;
    return r;
}

float next_toward_pos_inf(float x) {
    if (x == 0.0) {
        return uintBitsToFloat(1u);
    }
    uint u = floatBitsToUint(x);
    return uintBitsToFloat(x > 0.0 ? u + 1u : u - 1u);
}

float next_toward_neg_inf(float x) {
    return -next_toward_pos_inf(-x);
}

// a / b rounded to nearest-even (Vulkan's "/" is only 2.5 ulp): step to the neighbour whose
// exact residual is smaller. Ties cannot occur for a quotient of two floats.
float div_rn(float a, float b) {
    precise float q = a / b;
    for (int step = 0; step < 3; step++) {
        float r = abs(div_residual(a, q, b));
        float up = next_toward_pos_inf(q);
        float down = next_toward_neg_inf(q);
        if (abs(div_residual(a, up, b)) < r) {
            q = up;
        } else if (abs(div_residual(a, down, b)) < r) {
            q = down;
        } else {
            break;
        }
    }
    return q;
}

// sqrt(x) rounded to nearest (Vulkan's sqrt is only ~3 ulp): step to the neighbour with the
// smaller exact residual |x - s*s| (the nearer root except within ~2^-24 of a midpoint).
float sqrt_rn(float x) {
    precise float s = sqrt(x);
    for (int step = 0; step < 3; step++) {
        float r = abs(div_residual(x, s, s));
        float up = next_toward_pos_inf(s);
        float down = next_toward_neg_inf(s);
        if (abs(div_residual(x, up, up)) < r) {
            s = up;
        } else if (abs(div_residual(x, down, down)) < r) {
            s = down;
        } else {
            break;
        }
    }
    return s;
}

// f16 bits -> f32, exact, subnormals kept (unpackHalf2x16 may flush them).
float f16_to_f32(uint h) {
    uint sign = (h & 0x8000u) << 16;
    uint expo = (h >> 10) & 0x1Fu;
    uint mant = h & 0x3FFu;
    if (expo == 0u) {
        float v = float(mant) * (1.0 / 16777216.0);  // mant * 2^-24, exact
        return sign != 0u ? -v : v;
    }
    if (expo == 31u) {
        return uintBitsToFloat(sign | 0x7F800000u | (mant << 13));
    }
    return uintBitsToFloat(sign | ((expo + 112u) << 23) | (mant << 13));
}

// f32 -> f16 bits rounded to nearest-even, done in integers so no driver rounding mode matters.
uint f32_to_f16_rte(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u;
    uint expo = (x >> 23) & 0xFFu;
    uint mant = x & 0x7FFFFFu;
    if (expo == 0xFFu) {
        return sign | 0x7C00u | (mant != 0u ? 0x200u : 0u);
    }
    int e = int(expo) - 112;  // rebias 127 -> 15
    if (e >= 31) {
        return sign | 0x7C00u;
    }
    uint kept;
    uint rem;
    uint halfway;
    if (e <= 0) {
        if (e < -10) {
            return sign;
        }
        uint full = mant | 0x800000u;
        uint shift = uint(14 - e);
        kept = full >> shift;
        rem = full & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1u);
    } else {
        kept = (uint(e) << 10) | (mant >> 13);
        rem = mant & 0x1FFFu;
        halfway = 0x1000u;
    }
    if (rem > halfway || (rem == halfway && (kept & 1u) != 0u)) {
        kept += 1u;  // a carry rolls into the exponent (or to inf) as it should
    }
    return sign | kept;
}

// Byte `index` of a byte array stored in uint words.
uint byte_at_words(uint word, uint index) {
    return (word >> (8u * (index & 3u))) & 0xFFu;
}

// Signed byte i (0..3) of a word of packed int8.
int sbyte(uint word, int i) {
    return bitfieldExtract(int(word), 8 * i, 8);
}

// Tree reduction over a shared array of WG_SIZE values; the result is in red[0] for everyone.
#define TREE_REDUCE(red, lid, OP)                                        \
    barrier();                                                           \
    for (uint stride_ = WG_SIZE / 2u; stride_ > 0u; stride_ >>= 1u) {    \
        if ((lid) < stride_) {                                           \
            red[lid] = OP(red[lid], red[(lid) + stride_]);               \
        }                                                                \
        barrier();                                                       \
    }

#define OP_ADD(a, b) ((a) + (b))
#define OP_MAX(a, b) max((a), (b))

// attention's split-K run: positions a work-group attends (bitnet.hal.device_runtime's
// ATTENTION_SPLIT; attend.glsl, attention_combine.comp)
#define ATT_SPLIT 256u

// The cache row of position p of a row whose block table starts at element `base` of the
// int array `table` (bitnet.hal.kv_blocks): table[base + p / block] * block + p % block;
// block 0 means no table: row p. A macro: GLSL passes no buffer to a function.
#define CACHE_ROW(table, base, block, p)                                             \
    ((block) == 0u ? (p) : uint(table[(base) + (p) / (block)]) * (block) + (p) % (block))
