// Intrinsics the Swift kernels need that are C macros (`_mm_prefetch`, `_mm512_cvtps_ph`), which
// Swift cannot import, as static inline functions, which it imports and inlines like any other.
#pragma once

/// Asks for the cache line at `p` to be brought into the L2 cache (prefetcht1); never faults.
static inline __attribute__((always_inline)) void swiftlet_prefetch_l2(const void *p) {
    __builtin_prefetch(p, 0, 2);
}

#if defined(__x86_64__)
#include <immintrin.h>

/// The 16 floats rounded to half precision (to nearest even) and widened back: one vcvtps2ph and
/// one vcvtph2ps on a 512-bit register. Only for code that runs after the AVX-512 check.
static inline __attribute__((always_inline, target("avx512f"))) __m512 swiftlet_round_to_half16(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}
#endif
