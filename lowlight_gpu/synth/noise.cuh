// Per-value noise of one low image: the model of the Lv noise models, for the GPU and the CPU.
//
// Everything here is __host__ __device__: NVRTC compiles it into the CUDA kernels and the
// model's CPU library (native.cpp) runs the same functions, so both backends compute the same
// bytes (the contract: ARCHITECTURE.md, "Reproducibility").  Float arithmetic is float32 step
// by step (as numpy rounds float32 arrays, which the first datasets were made with), and every
// log, sincos and pow is detmath.cuh's, evaluated in double and rounded once to float32.  It must be compiled
// WITHOUT multiply-add contraction (nvcc/NVRTC --fmad=false, g++
// -ffp-contract=off): a fused a*b+c rounds once where the model rounds twice.  (CuPy
// also passes -ftz=true; float32 subnormals here only ever quantize to code 0,
// so flushing them changes no output.)  The double math is cheap on data-centre
// GPUs (full-rate FP64); on consumer cards (FP64 at 1/64 rate) a 12 MP image
// still costs less than its PCIe copies.
#pragma once

#include "philox.cuh"
#include "detmath.cuh"

#if !defined(__CUDACC_RTC__)
#  include <math.h>
#endif

// noise model of ll_noise_params.model (native.MODEL_CODES)
#define LL_MODEL_POISSON_READ 0  // poisson-gaussian and brooks: k / peak + read_sigma * n
#define LL_MODEL_POISSON 1       // k / peak
#define LL_MODEL_GAUSSIAN 2      // signal[c] + sigma * n

#define LL_GUIDE_BUCKETS 256     // poisson.GUIDE_BUCKETS: guide rows have 257 entries
#define LL_GUIDE_SHIFT 24        // 32 - poisson.GUIDE_BITS

// Scalars of one output image, computed on the CPU (records.noise_record; native.NOISE_PARAMS_DTYPE).
struct ll_noise_params {
    unsigned int key0, key1;  // rng.split_key(seed)
    unsigned int step;        // records.noise_step
    int model;                // LL_MODEL_*
    int darken;               // noise.order == before: darken each noisy value
    int linear;               // noise.space == linear: back to sRGB per value
    float inv_peak;           // float32(1 / peak)
    float sigma;              // float32(read_sigma), or float32(sigma) for the gaussian model
    // Darkening z -> beta * (alpha * z) ** gamma, all float32.  A progressive
    // step t < T is scale * z ** power, i.e. alpha = 1, beta = scale, gamma = power.
    float alpha, beta, gamma;
};

// Per-code tables of one output image (poisson.PoissonTables and the float32 signal).
struct ll_tables {
    const unsigned int* thresholds;  // uint32 (M,)
    const int* guide;                // int32 (256 * 257,)
    const int* kshift;               // int32 (256,)
    const unsigned char* normal;     // bool (256,)
    const double* lam;               // float64 (256,)
    const float* signal;             // float32 (256,): the gaussian model's clean value per code
};

// float32 transcendentals: detmath in double, rounded once.
LL_HD float ll_logf(float x) { return (float)ll_dm_log_core((double)x); }  // x = u1 is positive and normal
// float32 x ** y (x >= 0, y > 0) as exp(y * log x) in double, rounded once.
LL_HD float ll_powf(float x, float y) { return (float)ll_dm_exp((double)y * ll_dm_log((double)x)); }

// Box-Muller on one pair of words: two float32 N(0, 1) values.
LL_HD void ll_box_muller(unsigned int w_radius, unsigned int w_angle, float* n0, float* n1)
{
    const float inv_2_23 = (float)(1.0 / 8388608.0);
    const float inv_2_24 = (float)(1.0 / 16777216.0);
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    const float u1 = ((float)(w_radius >> 9) + 0.5f) * inv_2_23;  // 23 bits + 0.5 is exact: u1 in (0, 1)
    const float theta = (float)(w_angle >> 8) * inv_2_24 * two_pi;
    const float radius = sqrtf(-2.0f * ll_logf(u1));
    double s, c;
    ll_dm_sincos_core((double)theta, &s, &c);  // theta in [0, 2 pi)
    *n0 = radius * (float)c;
    *n1 = radius * (float)s;
}

// The Poisson count of one value: table inversion, or the normal approximation for huge rates.
LL_HD long long ll_poisson(const ll_tables& tb, int code, unsigned int u)
{
    if (tb.normal[code]) return (long long)ll_dm_poisson_normal(tb.lam[code], ((double)u + 0.5) / 4294967296.0);
    const int g = code * (LL_GUIDE_BUCKETS + 1) + (int)(u >> LL_GUIDE_SHIFT);
    int pos = tb.guide[g];
    int end = tb.guide[g + 1];
    // The first threshold in [pos, end) above u.  Most buckets hold at most one threshold, so that one is
    // settled first; the rest of a longer bucket by bisection: a tail bucket holding ~100 thresholds
    // costs 7 steps instead of 100 -- and a warp waits for its slowest lane, so the worst case sets the speed.
    if (pos < end && tb.thresholds[pos] <= u) {
        ++pos;
        while (pos < end) {
            const int mid = (pos + end) >> 1;
            if (tb.thresholds[mid] <= u) pos = mid + 1; else end = mid;
        }
    }
    return (long long)pos + tb.kshift[code];
}

// np.clip(z, 0, 1) of one float32 value (z is never NaN: a count times a scale plus a finite normal).
LL_HD float ll_clip01(float z) { return z < 0.0f ? 0.0f : (z > 1.0f ? 1.0f : z); }

// Lv et al.'s darkening of one float32 value.
LL_HD float ll_darken(const ll_noise_params& p, float z)
{
    return p.beta * ll_powf(p.alpha * z, p.gamma);
}

// linear_to_srgb on one float32 value, constants rounded to float32.
LL_HD float ll_linear_to_srgb(float v)
{
    const float knee = (float)0.0031308;
    if (v <= knee) return v * (float)12.92;
    return (float)1.055 * ll_powf(fmaxf(v, knee), (float)(1.0 / 2.4)) - (float)0.055;
}

// [0, 1] -> uint8, rounding half up.
LL_HD unsigned char ll_quantize(float v)
{
    // v * 255 + 0.5 >= 0.5, so truncating to int is floorf, in one conversion a CPU vectorises.
    return (unsigned char)(int)(v * 255.0f + 0.5f);
}

// Compose, clip, curves and quantisation of one value from its Poisson count k and its normal
// (all float32: noise added, clipped, then the optional per-value darkening and sRGB curve).
// k fits an int: rates are at most 1e9 (config: noise.peak <= 1e9), so counts stay below 2**31, and
// int -> float rounds as long long -> float does (a CPU vectorises the 32-bit conversion).
LL_HD unsigned char ll_compose(const ll_noise_params& p, const ll_tables& tb, int code, int k, float normal)
{
    float z;
    if (p.model == LL_MODEL_GAUSSIAN) {
        z = tb.signal[code] + p.sigma * normal;
    } else {
        z = (float)k * p.inv_peak;
        if (p.model == LL_MODEL_POISSON_READ) z = z + p.sigma * normal;
    }
    z = ll_clip01(z);
    if (p.darken) z = ll_darken(p, z);
    if (p.linear) z = ll_linear_to_srgb(z);
    return ll_quantize(z);
}

// One noisy output code from its input code, its Poisson word and its normal.
LL_HD unsigned char ll_noisy_value(const ll_noise_params& p, const ll_tables& tb, int code,
                                   unsigned int word, float normal)
{
    const int k = p.model == LL_MODEL_GAUSSIAN ? 0 : (int)ll_poisson(tb, code, word);
    return ll_compose(p, tb, code, k, normal);
}

// The two values served by Philox block `j` of a slice of n values that starts
// at global value `first` (even): value 2j+v uses word v and normal v.
LL_HD void ll_noise_pair(const ll_noise_params& p, const ll_tables& tb, const unsigned char* codes,
                         unsigned char* out, long long n, long long first, long long j)
{
    const ll_words w = ll_noise_block_words((unsigned long long)(first / 2 + j), p.step, p.key0, p.key1);
    float n0 = 0.0f, n1 = 0.0f;
    if (p.model != LL_MODEL_POISSON) ll_box_muller(w.w[2], w.w[3], &n0, &n1);
    const long long i = 2 * j;
    out[i] = ll_noisy_value(p, tb, codes[i], w.w[0], n0);
    if (i + 1 < n) out[i + 1] = ll_noisy_value(p, tb, codes[i + 1], w.w[1], n1);
}
