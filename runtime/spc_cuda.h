// spc_cuda.h: device helpers that spc's generated CUDA C uses.
//
// Self-contained (it includes no other file), so NVRTC compiles it without system headers;
// spc inlines this file into every kernel's source.  The include guard lets
// several kernels' sources be concatenated into one translation unit.
#ifndef SPC_CUDA_H
#define SPC_CUDA_H

#define SPC_WARP_SIZE 32
#define SPC_FULL_MASK 0xffffffffu

// The sum of v over the warp's 32 lanes, in every lane.  A butterfly (xor)
// reduction: lane x adds v[x ^ o] at each step, and its partner adds the same
// two numbers the other way round, so all lanes hold bit-identical sums and
// the order of additions is fixed: results are deterministic run to run.
// Every lane of the warp must call it (the generated code calls it only where
// the warp's control flow is uniform).
__device__ __forceinline__ float spc_warp_sum(float v) {
#pragma unroll
    for (int o = SPC_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(SPC_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double spc_warp_sum(double v) {
#pragma unroll
    for (int o = SPC_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(SPC_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ int spc_warp_sum(int v) {
#pragma unroll
    for (int o = SPC_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(SPC_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ long long spc_warp_sum(long long v) {
#pragma unroll
    for (int o = SPC_WARP_SIZE / 2; o > 0; o >>= 1) v += __shfl_xor_sync(SPC_FULL_MASK, v, o);
    return v;
}
// The maximum, minimum of v over the warp's lanes, in every lane; whether any lane's v holds.
template <typename T> __device__ __forceinline__ T spc_warp_max(T v) {
#pragma unroll
    for (int o = SPC_WARP_SIZE / 2; o > 0; o >>= 1) {
        const T w = __shfl_xor_sync(SPC_FULL_MASK, v, o);
        v = w > v ? w : v;
    }
    return v;
}
template <typename T> __device__ __forceinline__ T spc_warp_min(T v) {
#pragma unroll
    for (int o = SPC_WARP_SIZE / 2; o > 0; o >>= 1) {
        const T w = __shfl_xor_sync(SPC_FULL_MASK, v, o);
        v = w < v ? w : v;
    }
    return v;
}
__device__ __forceinline__ bool spc_warp_any(bool v) { return __any_sync(SPC_FULL_MASK, v); }

// The sum of v over a group of G lanes (G a power of two up to 32; the groups
// are aligned runs of G lanes), in each of them.  A butterfly inside the group:
// deterministic like spc_warp_sum.  Only the group's lanes need to reach it
// together (its mask names them), so groups may leave a loop at different times.
template <int G, typename T> __device__ __forceinline__ T spc_group_sum(T v) {
    if (G > 1) {
        const unsigned mask = G >= 32 ? SPC_FULL_MASK
            : (((1u << (G & 31)) - 1u) << ((threadIdx.x & 31) & ~(G - 1)));
#pragma unroll
        for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(mask, v, o, G);
    }
    return v;
}

// Atomic accumulation (`buf[i] atomic+= v` in the loop IR).
__device__ __forceinline__ void spc_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void spc_atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void spc_atomic_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void spc_atomic_add(long long* p, long long v) {
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// Atomic compare-and-swap (`let old = atomic_cas(buf[i], expected, desired)` in the
// loop IR): the entry's old value; `desired` is stored where it equalled `expected`.
__device__ __forceinline__ int spc_atomic_cas(int* p, int expected, int desired) {
    return atomicCAS(p, expected, desired);
}
__device__ __forceinline__ long long spc_atomic_cas(long long* p, long long expected,
                                                    long long desired) {
    return static_cast<long long>(atomicCAS(reinterpret_cast<unsigned long long*>(p),
                                            static_cast<unsigned long long>(expected),
                                            static_cast<unsigned long long>(desired)));
}

// 16-bit floats, stored as their bits (unsigned short) so that no header is
// needed: loads widen to float, stores round to nearest even (PTX cvt.rn).
__device__ __forceinline__ float spc_f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short spc_f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float spc_bf16_to_f32(unsigned short b) {
    return __uint_as_float(static_cast<unsigned int>(b) << 16);
}
__device__ __forceinline__ unsigned short spc_f32_to_bf16(float f) {
#if __CUDA_ARCH__ >= 800
    unsigned short b;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
    return b;
#else
    const unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((u >> 16) | 0x40u);
    return static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}
// Atomic `p[0] += v` on a 16-bit float: the hardware's add where it has one
// (f16 from sm_70, bf16 from sm_90), else a compare-and-swap loop on the
// aligned 32-bit word holding it.
template <bool BF> __device__ __forceinline__ void spc_atomic_add16_cas(unsigned short* p,
                                                                      float v) {
    unsigned int* word = reinterpret_cast<unsigned int*>(
        reinterpret_cast<unsigned long long>(p) & ~3ull);
    const unsigned int shift = (reinterpret_cast<unsigned long long>(p) & 2ull) ? 16u : 0u;
    unsigned int old = *word, seen;
    do {
        seen = old;
        const unsigned short bits = static_cast<unsigned short>(seen >> shift);
        const float sum = (BF ? spc_bf16_to_f32(bits) : spc_f16_to_f32(bits)) + v;
        const unsigned int nb = BF ? spc_f32_to_bf16(sum) : spc_f32_to_f16(sum);
        old = atomicCAS(word, seen, (seen & ~(0xffffu << shift)) | (nb << shift));
    } while (old != seen);
}
__device__ __forceinline__ void spc_f32_to_f16_atomic_add(unsigned short* p, float v) {
#if __CUDA_ARCH__ >= 700
    asm volatile("red.add.noftz.f16 [%0], %1;" :: "l"(p), "h"(spc_f32_to_f16(v))
                 : "memory");
#else
    spc_atomic_add16_cas<false>(p, v);
#endif
}
__device__ __forceinline__ void spc_f32_to_bf16_atomic_add(unsigned short* p, float v) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.add.noftz.bf16 [%0], %1;" :: "l"(p), "h"(spc_f32_to_bf16(v))
                 : "memory");
#else
    spc_atomic_add16_cas<true>(p, v);
#endif
}

// A warp's 16 x 8 tile d += a (16 x 16) * b (16 x 8) in float32, a and b 16-bit
// (BF: bfloat16, else float16) in the m16n8k16 fragment layout: lane = 4 g + t holds
// a = {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)} (row, k; low half
// first), b = {(2t..2t+1, g), (2t+8..2t+9, g)} (k, column) and d = {(g, 2t),
// (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.  Tensor cores on sm_80 and later; before,
// the same sums through shuffles.
template <bool BF> __device__ __forceinline__ float spc_half_to_f32(unsigned short h) {
    return BF ? spc_bf16_to_f32(h) : spc_f16_to_f32(h);
}
// For the shuffle fallbacks: ra, the a registers of lane 4 g + s (this lane's
// rows g, g + 8); rb[c], the b registers of lane 4 (2t + c) + s (its columns).
__device__ __forceinline__ void spc_mma_gather(const unsigned* a, const unsigned* b, int s,
                                               unsigned* ra, unsigned (*rb)[2]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int q = 0; q < 4; ++q) ra[q] = __shfl_sync(SPC_FULL_MASK, a[q], 4 * g + s);
#pragma unroll
    for (int c = 0; c < 2; ++c) {
        rb[c][0] = __shfl_sync(SPC_FULL_MASK, b[0], 4 * (2 * t + c) + s);
        rb[c][1] = __shfl_sync(SPC_FULL_MASK, b[1], 4 * (2 * t + c) + s);
    }
}
template <bool BF> __device__ __forceinline__ void spc_mma_16816(float* d, const unsigned* a,
                                                                const unsigned* b) {
#if __CUDA_ARCH__ >= 800
    if (BF) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
#else
#pragma unroll
    for (int s = 0; s < 4; ++s) {           // the lanes holding k = 2s, 2s+1, 2s+8, 2s+9
        unsigned ra[4], rb[2][2];
        spc_mma_gather(a, b, s, ra, rb);
#pragma unroll
        for (int q = 0; q < 4; ++q) {           // d[q]: row g + 8 (q >> 1), column 2t + (q & 1)
            const int row = q >> 1, col = q & 1;
            float sum = 0.0f;
#pragma unroll
            for (int h = 0; h < 2; ++h) {       // k = 2s + h (a[row], b[0]), 2s + 8 + h (a[2 + row], b[1])
                sum += spc_half_to_f32<BF>((unsigned short)(ra[row] >> (16 * h)))
                     * spc_half_to_f32<BF>((unsigned short)(rb[col][0] >> (16 * h)));
                sum += spc_half_to_f32<BF>((unsigned short)(ra[2 + row] >> (16 * h)))
                     * spc_half_to_f32<BF>((unsigned short)(rb[col][1] >> (16 * h)));
            }
            d[q] += sum;
        }
    }
#endif
}
// A warp's 16 x 8 tile d += A (16 x 32, 2:4 sparse) * b (32 x 8), 16-bit inputs (BF:
// bfloat16, else float16), float32 sums: mma.sp m16n8k32 with sparsity selector 0.
// A is given compressed, 16 x 16 (two stored values per group of four columns), in
// spc_mma_16816's a layout; lane = 4 g + t holds b = {(2t + 8r .. 2t + 8r + 1, g),
// r = 0..3} (k, column); e, the metadata, on lanes t = 0, 1: the 2-bit places in
// their group of compressed columns 8t .. 8t + 7 (groups 4t .. 4t + 3), row g in bits
// 0..15 and row g + 8 in bits 16..31, column 8t + q at bits 2q (of its half).  Sparse
// tensor cores on sm_80 and later; before, the same sums (in another order) through
// shuffles.
template <bool BF> __device__ __forceinline__ void spc_mma_sp_16832(float* d, const unsigned* a,
                                                                   const unsigned* b,
                                                                   unsigned e) {
#if __CUDA_ARCH__ >= 800
    if (BF) {
        asm volatile("mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x0;"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]),
                       "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    } else {
        asm volatile("mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9,%10,%11}, {%0,%1,%2,%3}, %12, 0x0;"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]),
                       "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    }
#else
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int q = 0; q < 4; ++q) {               // d[q]: row g + 8 (q >> 1), column 2t + (q & 1)
        const int row = q >> 1, col = 2 * t + (q & 1);
        float sum = 0.0f;
        for (int c = 0; c < 16; ++c) {           // the row's compressed columns, in order
            // value: lane 4 g + (c % 8) / 2, register (c >= 8) * 2 + row, half c % 2
            const unsigned va = __shfl_sync(SPC_FULL_MASK, a[(c >= 8 ? 2 : 0) + row],
                                            4 * g + (c % 8) / 2);
            // place: lane 4 g + c / 8, bits 16 row + 2 (c % 8)
            const unsigned ve = __shfl_sync(SPC_FULL_MASK, e, 4 * g + c / 8);
            const int k = c / 2 * 4 + ((ve >> (16 * row + 2 * (c % 8))) & 3);
            // b(k, col): lane 4 col + (k % 8) / 2, register k / 8, half k % 2 (every
            // register shuffled: a lane sends one register to all, whatever k they want)
            unsigned vb = 0;
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const unsigned v = __shfl_sync(SPC_FULL_MASK, b[r], 4 * col + (k % 8) / 2);
                if (r == k / 8) vb = v;
            }
            sum += spc_half_to_f32<BF>((unsigned short)(va >> (16 * (c % 2))))
                 * spc_half_to_f32<BF>((unsigned short)(vb >> (16 * (k % 2))));
        }
        d[q] += sum;
    }
#endif
}
// float32 rounded to TensorFloat-32 (10 mantissa bits, to nearest, ties away from zero;
// NaN and infinity unchanged), still a float32.
__device__ __forceinline__ float spc_to_tf32(float x) {
#if __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
#else
    const unsigned bits = __float_as_uint(x);
    return isfinite(x) ? __uint_as_float((bits + 0x1000u) & 0xFFFFE000u) : x;
#endif
}
// A warp's 16 x 8 tile d += a (16 x 8) * b (8 x 8), tf32 inputs (float32 bits) in the
// m16n8k8 fragment layout: lane = 4 g + t holds a = {(g, t), (g+8, t), (g, t+4),
// (g+8, t+4)} (row, k), b = {(t, g), (t+4, g)} (k, column), d as spc_mma_16816's.
__device__ __forceinline__ void spc_mma_1688_tf32(float* d, const unsigned* a,
                                                  const unsigned* b) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
#pragma unroll
    for (int s = 0; s < 4; ++s) {           // the lanes holding k = s and s + 4
        unsigned ra[4], rb[2][2];
        spc_mma_gather(a, b, s, ra, rb);
#pragma unroll
        for (int q = 0; q < 4; ++q) {           // d[q]: row g + 8 (q >> 1), column 2t + (q & 1)
            const int row = q >> 1, col = q & 1;
            d[q] += __uint_as_float(ra[row]) * __uint_as_float(rb[col][0])
                  + __uint_as_float(ra[2 + row]) * __uint_as_float(rb[col][1]);
        }
    }
#endif
}
__device__ __forceinline__ unsigned spc_pack16(unsigned short lo, unsigned short hi) {
    return (unsigned)lo | ((unsigned)hi << 16);
}

// ldmatrix: N (2 or 4) 8 x 8 matrices of 16-bit elements from shared memory, lanes
// 8 j .. 8 j + 7 giving the rows of matrix j (row r at lane 8 j + r's ``row``, 16-byte
// aligned).  Lane 4 g + t receives in r[j] matrix j's elements (g, 2t) and (g, 2t + 1),
// low half first; TRANS: (2t, g) and (2t + 1, g).  Before sm_75, the same through
// shuffles of the row addresses.
template <int N, bool TRANS>
__device__ __forceinline__ void spc_ldmatrix(unsigned* r, const unsigned short* row) {
#if __CUDA_ARCH__ >= 750
    const unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if (N == 4 && TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    else if (N == 4)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    else if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                     : "=r"(r[0]), "=r"(r[1]) : "r"(a));
#else
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const unsigned long long mine = reinterpret_cast<unsigned long long>(row);
#pragma unroll
    for (int j = 0; j < N; ++j) {
        if (TRANS) {
            const unsigned short* r0 = reinterpret_cast<const unsigned short*>(
                __shfl_sync(SPC_FULL_MASK, mine, 8 * j + 2 * t));
            const unsigned short* r1 = reinterpret_cast<const unsigned short*>(
                __shfl_sync(SPC_FULL_MASK, mine, 8 * j + 2 * t + 1));
            r[j] = spc_pack16(r0[g], r1[g]);
        } else {
            const unsigned short* rg = reinterpret_cast<const unsigned short*>(
                __shfl_sync(SPC_FULL_MASK, mine, 8 * j + g));
            r[j] = spc_pack16(rg[2 * t], rg[2 * t + 1]);
        }
    }
#endif
}

// min/max with the loop IR's meaning: min(a, b) = a < b ? a : b.
template <typename T> __device__ __forceinline__ T spc_min(T a, T b) { return a < b ? a : b; }
template <typename T> __device__ __forceinline__ T spc_max(T a, T b) { return a > b ? a : b; }

// Read-only loads through the non-coherent cache, 4 and 16 bytes wide.
template <typename T> __device__ __forceinline__ T spc_ld(const T* p) { return __ldg(p); }
__device__ __forceinline__ float4 spc_ld4(const float* p) {
    return __ldg(reinterpret_cast<const float4*>(p));
}
__device__ __forceinline__ float4 spc_ldv(const float* p) {
    return __ldg(reinterpret_cast<const float4*>(p));
}
__device__ __forceinline__ double2 spc_ldv(const double* p) {
    return __ldg(reinterpret_cast<const double2*>(p));
}
__device__ __forceinline__ bool spc_aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// Special float constants without <math.h> (NVRTC has no system headers).
__device__ __forceinline__ float spc_inf_f() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float spc_nan_f() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double spc_inf_d() { return __longlong_as_double(0x7ff0000000000000ll); }
__device__ __forceinline__ double spc_nan_d() { return __longlong_as_double(0x7ff8000000000000ll); }

#endif  // SPC_CUDA_H
