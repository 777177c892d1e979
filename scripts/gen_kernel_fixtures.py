#!/usr/bin/env python3
"""Builds the dequantization fixtures in Tests/KernelsTests/Fixtures/.

For every supported tensor type it makes a few random but valid blocks (random bytes,
with the f16 scale fields replaced by sane finite values), dequantizes them with the
`gguf` package's reference `gguf.quants.dequantize`, and writes

    <type>.bin   the encoded blocks, as stored in a GGUF file
    <type>.f32   the expected floats, little-endian float32

The Swift tests decode <type>.bin and compare with <type>.f32 bit for bit.
Deterministic (fixed seed), so rerunning gives identical files.

Usage: python3 scripts/gen_kernel_fixtures.py
"""
from __future__ import annotations

import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "KernelsTests", "Fixtures")

# Byte offsets of the f16 scale fields inside one block, per type.
# "d": signed scale; "m": offset/min (may be negative for Q4_1/Q5_1, non-negative for K dmin).
SCALE_FIELDS: dict[T, list[tuple[int, str]]] = {
    T.Q4_0: [(0, "d")],
    T.Q4_1: [(0, "d"), (2, "m")],
    T.Q5_0: [(0, "d")],
    T.Q5_1: [(0, "d"), (2, "m")],
    T.Q8_0: [(0, "d")],
    T.Q2_K: [(80, "d"), (82, "dmin")],
    T.Q3_K: [(108, "d")],
    T.Q4_K: [(0, "d"), (2, "dmin")],
    T.Q5_K: [(0, "d"), (2, "dmin")],
    T.Q6_K: [(208, "d")],
    T.IQ4_NL: [(0, "d")],
    T.IQ4_XS: [(0, "d")],
    T.TQ1_0: [(52, "d")],
    T.TQ2_0: [(64, "d")],
    T.IQ2_XXS: [(0, "d")],
    T.IQ2_XS: [(0, "d")],
    T.IQ2_S: [(0, "d")],
    T.IQ3_XXS: [(0, "d")],
    T.IQ3_S: [(0, "d")],
    T.IQ1_S: [(0, "d")],
}

# IQ1_M keeps its f16 scale in the top 4 bits of the four 16-bit words at this offset.
SPLIT_SCALE_FIELDS: dict[T, int] = {T.IQ1_M: 48}

# Byte offsets of E8M0 exponent bytes (MXFP4's block scale 2^(e-127)).
EXPONENT_FIELDS: dict[T, int] = {T.MXFP4: 0}

# Number of blocks per fixture (32-element types get more blocks, K-quants fewer).
BLOCKS = {T.F32: 96, T.F16: 192, T.BF16: 192}


def sane_f16(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(0.5), size=n))
    if kind == "dmin":
        sign = 1.0
    else:
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    v = (mag * sign).astype(np.float16)
    # a few exact zeros and subnormals exercise edge cases
    v[0] = np.float16(0.0)
    if n > 2:
        v[1] = np.float16(3e-6)  # subnormal in f16
    return v


def make_blocks(rng: np.random.Generator, t: T) -> np.ndarray:
    block_size, type_size = GGML_QUANT_SIZES[t]
    if t == T.F32:
        v = rng.standard_normal(BLOCKS[t]).astype(np.float32) * np.float32(3)
        v[0] = np.float32(0.0)
        v[1] = np.float32(-0.0)
        v[2] = np.float32(1e-40)  # subnormal
        return v.view(np.uint8)
    if t == T.F16:
        # all finite f16 bit patterns: exponent field != 0x1f
        bits = rng.integers(0, 1 << 16, size=BLOCKS[t], dtype=np.uint32).astype(np.uint16)
        bits = np.where((bits & 0x7C00) == 0x7C00, bits & np.uint16(0xBFFF), bits).astype(np.uint16)
        bits[0] = 0x0001  # smallest subnormal
        bits[1] = 0x8000  # -0
        return bits.view(np.uint8)
    if t == T.BF16:
        bits = rng.integers(0, 1 << 16, size=BLOCKS[t], dtype=np.uint32).astype(np.uint16)
        bits = np.where((bits & 0x7F80) == 0x7F80, bits & np.uint16(0xBFFF), bits).astype(np.uint16)
        bits[0] = 0x0001
        bits[1] = 0x8000
        return bits.view(np.uint8)
    n_blocks = 16 if block_size == 32 else 4
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint16).astype(np.uint8)
    for off, kind in SCALE_FIELDS.get(t, []):
        blocks[:, off:off + 2] = sane_f16(rng, kind, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if t in SPLIT_SCALE_FIELDS:
        off = SPLIT_SCALE_FIELDS[t]
        bits = sane_f16(rng, "d", n_blocks).view(np.uint16)
        words = blocks[:, off:off + 8].copy().view(np.uint16)  # (n_blocks, 4)
        for k in range(4):
            words[:, k] = (words[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
        blocks[:, off:off + 8] = words.view(np.uint8)
    if t in EXPONENT_FIELDS:
        # scales 2^-20 .. 2^4, and the two subnormal encodings (0 and 1)
        e = rng.integers(107, 132, size=n_blocks, dtype=np.uint16).astype(np.uint8)
        e[0], e[1] = 0, 1
        blocks[:, EXPONENT_FIELDS[t]] = e
    return blocks.reshape(-1)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
             T.IQ4_NL, T.IQ4_XS, T.MXFP4, T.TQ1_0, T.TQ2_0,
             T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M]
    for t in types:
        # the first formats share one stream (their files predate the others); every later
        # format gets its own, so adding one never changes another's fixture
        raw = make_blocks(rng if t <= T.Q6_K or t == T.BF16 else np.random.default_rng([20240611, int(t)]), t)
        if t == T.F32:
            expected = raw.view(np.float32).copy()
        else:
            expected = dequantize(raw, t).astype(np.float32, copy=False).reshape(-1)
        assert np.all(np.isfinite(expected)), t.name
        name = t.name.lower()
        with open(os.path.join(OUT, f"{name}.bin"), "wb") as f:
            f.write(raw.tobytes())
        with open(os.path.join(OUT, f"{name}.f32"), "wb") as f:
            f.write(expected.astype("<f4").tobytes())
        print(f"{t.name:5s} {raw.size:6d} bytes -> {expected.size:5d} floats")


if __name__ == "__main__":
    main()
