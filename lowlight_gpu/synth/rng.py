"""Counter-based random numbers: Philox4x32-10 (``philox.cuh``, run through the model's CPU library).

Every random value in lowlight_gpu is a pure function of (key, counter), so a value can be
recomputed anywhere -- another worker, another machine, the GPU -- without replaying a
sequence.  The layout of the counter is fixed here and documented in ARCHITECTURE.md:

    key     = (pair_seed & 0xffffffff, pair_seed >> 32)
    counter = (c0, c1, c2, c3) = (block & 0xffffffff, block >> 32, step, stream)

``stream`` separates purposes (scalar parameters vs. pixel noise) and ``step`` separates the
images of one pair (the final low image uses step 0, a progressive step t < T uses t).
"""

import math

import numpy as np

from . import detmath, native

MASK32 = 0xFFFFFFFF
STREAM_PARAMS = 0
STREAM_NOISE = 1


def split_key(seed):
    """Split a 64-bit seed into the two 32-bit Philox key words."""
    seed = int(seed)
    return seed & MASK32, (seed >> 32) & MASK32


def random_blocks(seed, step, stream, start, count):
    """Philox words for blocks [start, start+count) of (seed, step, stream), as a (count, 4) uint32 array."""
    k0, k1 = split_key(seed)
    return native.philox_blocks(k0, k1, step, stream, start, count)


def uniform53(w0, w1):
    """A double in [0, 1) from two 32-bit words (the genrand_res53 construction; exact integer arithmetic)."""
    return ((int(w0) >> 5) * 67108864 + (int(w1) >> 6)) / 9007199254740992.0


def scalar_block(seed, slot):
    """The four Philox words reserved for scalar parameter ``slot`` of a pair (block ``slot`` of stream 0)."""
    return [int(w) for w in random_blocks(seed, 0, STREAM_PARAMS, slot, 1)[0]]


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
