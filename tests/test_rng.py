"""Philox4x32-10 (known answers from Random123), the counter layout, and the scalar draws."""

import numpy as np
import pytest

from lowlight_gpu import rng

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
    out = rng.philox4x32(*ctr, *key)
    assert tuple(int(w) for w in out) == expected


def test_philox_vectorised_matches_scalar_calls():
    # Arrays of counters (with broadcasting of the scalar words) give the per-element answers.
    c0 = np.array([0, 1, 0xFFFFFFFF, 0x243F6A88], np.uint64)
    c1 = np.array([0, 0, 0xFFFFFFFF, 0x85A308D3], np.uint64)
    out = rng.philox4x32(c0, c1, 7, 1, 0xA4093822, 0x299F31D0)
    assert all(w.shape == (4,) and w.dtype == np.uint64 for w in out)
    for i in range(4):
        single = rng.philox4x32(int(c0[i]), int(c1[i]), 7, 1, 0xA4093822, 0x299F31D0)
        assert [int(w[i]) for w in out] == [int(w) for w in single]
    assert max(int(w.max()) for w in out) <= 0xFFFFFFFF


def test_split_key_is_low_then_high_word():
    assert rng.split_key(0x0123456789ABCDEF) == (0x89ABCDEF, 0x01234567)
    assert rng.split_key(5) == (5, 0)


@pytest.mark.parametrize("start", [0, 3, (1 << 32) - 2])
def test_random_blocks_follow_the_counter_layout(monkeypatch, start):
    # counter = (block & 0xffffffff, block >> 32, step, stream), key = split_key(seed); chunking must not matter,
    # including a start that crosses the 2**32 boundary into the high counter word.
    seed, step, stream, count = 0x1F2E3D4C5B6A79, 5, rng.STREAM_NOISE, 37
    whole = rng.random_blocks(seed, step, stream, start, count)
    monkeypatch.setattr(rng, "CHUNK_BLOCKS", 8)
    assert np.array_equal(rng.random_blocks(seed, step, stream, start, count), whole)
    assert whole.shape == (count, 4) and whole.dtype == np.uint32
    k0, k1 = rng.split_key(seed)
    for i in (0, 1, count - 1):
        block = start + i
        ref = rng.philox4x32(block & 0xFFFFFFFF, block >> 32, step, stream, k0, k1)
        assert [int(w) for w in whole[i]] == [int(w) for w in ref]


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
    ref = rng.philox4x32(2, 0, 0, rng.STREAM_PARAMS, k0, k1)
    assert w == [int(x) for x in ref]
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


def test_scalar_philox_equals_vectorised_philox():
    """The pure-int Philox used for scalar parameters is the same function as the numpy one."""
    gen = np.random.default_rng(7)
    words = gen.integers(0, 2**32, size=(64, 6), dtype=np.uint64)
    for row in words:
        args = [int(v) for v in row]
        want = [int(np.asarray(w).reshape(-1)[0]) for w in rng.philox4x32(*args)]
        assert list(rng.philox4x32_int(*args)) == want
