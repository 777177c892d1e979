// Intrinsics the Swift kernels need that are C macros (`_mm_prefetch`, `_mm512_cvtps_ph`), which
// Swift cannot import, as static inline functions, which it imports and inlines like any other.
#pragma once

/// Asks for the cache line at `p` to be brought into the L2 cache (prefetcht1); never faults.
static inline __attribute__((always_inline)) void swiftlet_prefetch_l2(const void *p) {
    __builtin_prefetch(p, 0, 2);
}

/// Asks for the cache line at `p` to be brought into the L1 cache (prefetcht0); never faults.
static inline __attribute__((always_inline)) void swiftlet_prefetch_l1(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

#if defined(__x86_64__)
#include <immintrin.h>

/// The 16 floats rounded to half precision (to nearest even) and widened back: one vcvtps2ph and
/// one vcvtph2ps on a 512-bit register. Only for code that runs after the AVX-512 check.
static inline __attribute__((always_inline, target("avx512f"))) __m512 swiftlet_round_to_half16(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

/// The 8 floats rounded to half precision (to nearest even) and widened back: one vcvtps2ph and
/// one vcvtph2ps on a 256-bit register (F16C, which every AVX2 CPU has). Swift's generic
/// SIMD8<Float16> conversion sometimes splits into 128-bit halves and spills.
static inline __attribute__((always_inline, target("avx,f16c"))) __m256 swiftlet_round_to_half8(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}
#endif
