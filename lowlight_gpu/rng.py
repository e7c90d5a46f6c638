"""Counter-based random numbers: Philox4x32-10, vectorised in numpy.

Every random value in lowlight_gpu is a pure function of (key, counter), so a
value can be recomputed anywhere -- another worker, another machine, the GPU
kernel in ``synth/philox.cuh`` -- without replaying a sequence.  The layout of
the counter is fixed here and documented in ARCHITECTURE.md:

    key     = (pair_seed & 0xffffffff, pair_seed >> 32)
    counter = (c0, c1, c2, c3) = (block & 0xffffffff, block >> 32, step, stream)

``stream`` separates purposes (scalar parameters vs. pixel noise) and ``step``
separates the images of one pair (the final low image uses step 0, a
progressive step t < T uses t).
"""

import math

import numpy as np

from .synth import detmath

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF

STREAM_PARAMS = 0
STREAM_NOISE = 1

# Blocks per vectorised chunk: large enough to amortise numpy call overhead,
# small enough that the working set (about 10 uint64 arrays) stays in L2.
CHUNK_BLOCKS = 1 << 14

_M0 = np.uint64(PHILOX_M0)
_M1 = np.uint64(PHILOX_M1)
_MASK = np.uint64(MASK32)
_SHIFT = np.uint64(32)


def split_key(seed):
    """Split a 64-bit seed into the two 32-bit Philox key words."""
    seed = int(seed)
    return seed & MASK32, (seed >> 32) & MASK32


def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter words (arrays or ints < 2**32) under key (k0, k1); returns four uint64 arrays of 32-bit words."""
    shape = np.broadcast_shapes(np.shape(c0), np.shape(c1), np.shape(c2), np.shape(c3))
    x0, x1, x2, x3 = (np.array(np.broadcast_to(np.asarray(c, dtype=np.uint64), shape)) for c in (c0, c1, c2, c3))
    p0 = np.empty(shape, np.uint64)
    p1 = np.empty(shape, np.uint64)
    k0, k1 = int(k0) & MASK32, int(k1) & MASK32
    for _ in range(10):
        # Products of two 32-bit words fit a uint64 exactly; its halves are Philox's hi/lo.
        np.multiply(x0, _M0, out=p0)
        np.multiply(x2, _M1, out=p1)
        # x0' = hi(M1*x2) ^ x1 ^ k0 ; x2' = hi(M0*x0) ^ x3 ^ k1 ; x1' = lo(M1*x2) ; x3' = lo(M0*x0)
        np.right_shift(p1, _SHIFT, out=x0)
        x0 ^= x1
        x0 ^= np.uint64(k0)
        np.right_shift(p0, _SHIFT, out=x2)
        x2 ^= x3
        x2 ^= np.uint64(k1)
        np.bitwise_and(p1, _MASK, out=x1)
        np.bitwise_and(p0, _MASK, out=x3)
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return x0, x1, x2, x3


def random_blocks(seed, step, stream, start, count):
    """Philox words for blocks [start, start+count) of (seed, step, stream), as a (count, 4) uint32 array."""
    k0, k1 = split_key(seed)
    out = np.empty((count, 4), np.uint32)
    for lo in range(0, count, CHUNK_BLOCKS):
        hi = min(count, lo + CHUNK_BLOCKS)
        block = np.arange(start + lo, start + hi, dtype=np.uint64)
        words = philox4x32(block & _MASK, block >> _SHIFT, step, stream, k0, k1)
        for j in range(4):
            out[lo:hi, j] = words[j]  # values are < 2**32, so the narrowing cast is exact
    return out


def uniform53(w0, w1):
    """A double in [0, 1) from two 32-bit words (the genrand_res53 construction)."""
    return ((int(w0) >> 5) * 67108864 + (int(w1) >> 6)) / 9007199254740992.0


def philox4x32_int(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of one counter with Python ints: the scalar twin of philox4x32, ~50x faster per call."""
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def scalar_block(seed, slot):
    """The four Philox words reserved for scalar parameter ``slot`` of a pair."""
    k0, k1 = split_key(seed)
    return list(philox4x32_int(slot & MASK32, (slot >> 32) & MASK32, 0, STREAM_PARAMS, k0, k1))


def scalar_uniform(seed, slot):
    """A reproducible U[0, 1) double for parameter ``slot`` of the pair with this seed."""
    w = scalar_block(seed, slot)
    return uniform53(w[0], w[1])


def scalar_normal(seed, slot):
    """A reproducible N(0, 1) double for parameter ``slot`` (Box-Muller on the slot's words, detmath's log and cos)."""
    w = scalar_block(seed, slot)
    u1 = 1.0 - uniform53(w[0], w[1])  # in (0, 1], so log() is finite
    u2 = uniform53(w[2], w[3])
    _, cos = detmath.scalar(detmath.sincos, 2.0 * np.pi * u2)
    return math.sqrt(-2.0 * detmath.scalar(detmath.log, u1)) * cos
