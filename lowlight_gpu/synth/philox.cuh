// Philox4x32-10 (Salmon et al., SC'11): the counter-based generator behind every random value.
//
// Compiled into the CUDA kernels (NVRTC, through CuPy) and into the model's CPU library
// (native.cpp), which synth/rng.py calls: one source of every random word.  No standard
// headers: NVRTC has none.
#pragma once

#ifndef LL_HD
#  if defined(__CUDACC__)
#    define LL_HD __host__ __device__ __forceinline__
#  else
#    define LL_HD inline
#  endif
#endif

#define LL_PHILOX_M0 0xD2511F53u
#define LL_PHILOX_M1 0xCD9E8D57u
#define LL_PHILOX_W0 0x9E3779B9u
#define LL_PHILOX_W1 0xBB67AE85u

// Counter word 3: which purpose a draw serves (rng.STREAM_PARAMS / rng.STREAM_NOISE).
#define LL_STREAM_PARAMS 0u
#define LL_STREAM_NOISE 1u

struct ll_words {
    unsigned int w[4];
};

// One Philox4x32 round on counter words (c0..c3) under round key (k0, k1).
LL_HD void ll_philox_round(unsigned int& c0, unsigned int& c1, unsigned int& c2, unsigned int& c3,
                           unsigned int k0, unsigned int k1)
{
    // A 32x32->64 product gives Philox's hi/lo halves (mul.wide.u32 on the GPU).
    const unsigned long long p0 = (unsigned long long)LL_PHILOX_M0 * c0;
    const unsigned long long p1 = (unsigned long long)LL_PHILOX_M1 * c2;
    const unsigned int x0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
    const unsigned int x2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
    c1 = (unsigned int)p1;
    c3 = (unsigned int)p0;
    c0 = x0;
    c2 = x2;
}

// The key of round r (0..9): the key words plus r times the Weyl constants, mod 2**32.
LL_HD unsigned int ll_philox_key0(unsigned int k0, int r) { return k0 + (unsigned int)r * LL_PHILOX_W0; }
LL_HD unsigned int ll_philox_key1(unsigned int k1, int r) { return k1 + (unsigned int)r * LL_PHILOX_W1; }

// Ten rounds of Philox4x32 on counter (c0..c3) under key (k0, k1).
LL_HD ll_words ll_philox4x32_10(unsigned int c0, unsigned int c1, unsigned int c2, unsigned int c3,
                                unsigned int k0, unsigned int k1)
{
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int round = 0; round < 10; ++round)
        ll_philox_round(c0, c1, c2, c3, ll_philox_key0(k0, round), ll_philox_key1(k1, round));
    ll_words out = {{c0, c1, c2, c3}};
    return out;
}

// The words of one noise block: counter = (block lo, block hi, step, STREAM_NOISE), as rng.random_blocks.
LL_HD ll_words ll_noise_block_words(unsigned long long block, unsigned int step,
                                    unsigned int key0, unsigned int key1)
{
    return ll_philox4x32_10((unsigned int)block, (unsigned int)(block >> 32), step, LL_STREAM_NOISE,
                            key0, key1);
}
