// Software prefetch for the Swift kernels: `_mm_prefetch` is a C macro, which Swift cannot import,
// while a static inline function is imported and inlined like any other.
#pragma once

/// Asks for the cache line at `p` to be brought into the L2 cache (prefetcht1); never faults.
static inline __attribute__((always_inline)) void swiftlet_prefetch_l2(const void *p) {
    __builtin_prefetch(p, 0, 2);
}
