"""Philox4x32-10 (known answers from Random123), the counter layout, and the scalar draws."""

import numpy as np
import pytest

from lowlight_gpu.synth import native, rng


def philox(c0, c1, c2, c3, k0, k1):
    """The four words of one counter under one key, from philox.cuh through the library."""
    return [int(w) for w in native.philox_blocks(k0, k1, c2, c3, (c1 << 32) | c0, 1)[0]]

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key) -> output, all as 32-bit words.
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    assert tuple(philox(*ctr, *key)) == expected


def test_philox_blocks_are_the_words_of_each_counter():
    # A run of blocks gives each block's own words, across the 2**32 boundary into the high counter word.
    start = (1 << 32) - 3
    words = native.philox_blocks(0xA4093822, 0x299F31D0, 7, 1, start, 700)  # more than one chunk of the library
    for i in (0, 2, 3, 511, 512, 699):
        block = start + i
        assert [int(w) for w in words[i]] == philox(block & 0xFFFFFFFF, block >> 32, 7, 1, 0xA4093822, 0x299F31D0)


def test_split_key_is_low_then_high_word():
    assert rng.split_key(0x0123456789ABCDEF) == (0x89ABCDEF, 0x01234567)
    assert rng.split_key(5) == (5, 0)


@pytest.mark.parametrize("start", [0, 3, (1 << 32) - 2])
def test_random_blocks_follow_the_counter_layout(start):
    # counter = (block & 0xffffffff, block >> 32, step, stream), key = split_key(seed), including a start that
    # crosses the 2**32 boundary into the high counter word.
    seed, step, stream, count = 0x1F2E3D4C5B6A79, 5, rng.STREAM_NOISE, 37
    whole = rng.random_blocks(seed, step, stream, start, count)
    assert whole.shape == (count, 4) and whole.dtype == np.uint32
    k0, k1 = rng.split_key(seed)
    for i in (0, 1, count - 1):
        block = start + i
        assert [int(w) for w in whole[i]] == philox(block & 0xFFFFFFFF, block >> 32, step, stream, k0, k1)


def test_random_blocks_differ_by_step_stream_and_seed():
    base = rng.random_blocks(11, 0, 1, 0, 16)
    assert not np.array_equal(base, rng.random_blocks(11, 1, 1, 0, 16))
    assert not np.array_equal(base, rng.random_blocks(11, 0, 0, 0, 16))
    assert not np.array_equal(base, rng.random_blocks(12, 0, 1, 0, 16))
    assert not np.array_equal(base, rng.random_blocks(11 + (1 << 32), 0, 1, 0, 16))  # high key word counts


def test_uniform53_range_and_resolution():
    assert rng.uniform53(0, 0) == 0.0
    top = rng.uniform53(0xFFFFFFFF, 0xFFFFFFFF)
    assert top < 1.0 and top == 1.0 - 2.0 ** -53
    # The low 6 bits of w1 and the low 5 bits of w0 are dropped; the next bits count.
    assert rng.uniform53(0, 1 << 6) == 2.0 ** -53
    assert rng.uniform53(1 << 5, 0) == 2.0 ** -27


def test_scalar_uniform_is_a_pure_function_of_seed_and_slot():
    a = rng.scalar_uniform(123, 2)
    assert a == rng.scalar_uniform(123, 2)
    w = rng.scalar_block(123, 2)
    k0, k1 = rng.split_key(123)
    assert w == philox(2, 0, 0, rng.STREAM_PARAMS, k0, k1)
    assert a == rng.uniform53(w[0], w[1])
    assert a != rng.scalar_uniform(123, 3) and a != rng.scalar_uniform(124, 2)


def test_scalar_uniform_and_normal_distributions():
    n = 2500
    u = np.array([rng.scalar_uniform(s, 0) for s in range(n)])
    g = np.array([rng.scalar_normal(s, 7) for s in range(n)])
    assert u.min() >= 0.0 and u.max() < 1.0
    # Mean 1/2 (sd 1/sqrt(12 n)), variance 1/12; 5-sigma bounds.
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / n)
    # A crude uniformity check on deciles: each holds n/10 +- 5 sigma.
    counts = np.bincount((u * 10).astype(int), minlength=10)
    assert np.all(np.abs(counts - n / 10) < 5 * np.sqrt(n * 0.1 * 0.9))
    assert abs(g.mean()) < 5 / np.sqrt(n)
    assert abs(g.std() - 1.0) < 5 / np.sqrt(2 * n)
    assert abs(np.mean(np.abs(g) > 1.959964) - 0.05) < 5 * np.sqrt(0.05 * 0.95 / n)
    assert abs(np.corrcoef(u, g)[0, 1]) < 5 / np.sqrt(n)
