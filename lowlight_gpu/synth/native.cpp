// The CPU build of the model: the very headers the GPU compiles (philox.cuh, detmath.cuh, noise.cuh,
// physics.cuh), driven by loops laid out for a CPU.
//
// Built at install into a small shared library (setup.py; no Python C API) and called through ctypes
// (synth/native.py), which releases the GIL for the length of each call.  Every per-value step is a
// header function, so the CPU and the GPU run one source; only the loops around them differ:
//
//   * the noise loop goes in chunks of CHUNK_BLOCKS Philox blocks, one pass per stage (Philox,
//     Box-Muller, Poisson search, compose), so the compiler can vectorise the pure arithmetic passes;
//   * the physics path runs ll_phys_site over the mosaic, then ll_phys_pixel over the image, as the
//     two CUDA kernels do;
//   * the scalar helpers (Philox blocks, the detmath functions, the Poisson tables) loop over arrays
//     for the Python side, which holds no copy of this arithmetic.
//
// It must be compiled WITHOUT multiply-add contraction (-ffp-contract=off) and without -ffast-math:
// the bytes then do not depend on the compiler, the instruction set or the machine (ARCHITECTURE.md,
// "Reproducibility").  On x86-64 it is built for three instruction-set levels (ll_cpu_level).
#include "noise.cuh"
#include "physics.cuh"

#include <stdlib.h>
#include <string.h>

#define LL_API extern "C" __attribute__((visibility("default")))

// The x86-64 level this CPU runs (4: AVX-512, 3: AVX2, 0: baseline or another architecture).  setup.py
// builds this file once per level on x86-64 and native.py loads the widest build the CPU runs; every
// build gives the same bytes (vector and scalar IEEE operations round alike, and nothing is contracted).
LL_API int ll_cpu_level(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("bmi2") &&
        __builtin_cpu_supports("fma"))
        return 4;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("fma"))
        return 3;
#endif
    return 0;
}

// Bump when an exported signature changes: native.py refuses a library built from other sources.
#define LL_ABI_VERSION 1

LL_API int ll_abi_version(void) { return LL_ABI_VERSION; }

// ---------------------------------------------------------------- Philox and detmath over arrays

#define LL_CHUNK_BLOCKS 512  // the chunk's words, normals and counts (40 bytes a block, 20 KiB) stay in L1

// Philox4x32-10 of blocks [first, first + count) of (step, stream), structure of arrays: each round runs
// across the whole chunk, so the compiler vectorises it over the blocks (ll_philox4x32_10's words).
static inline void philox_pass(unsigned long long first, long long count, unsigned int step, unsigned int stream,
                               unsigned int key0, unsigned int key1, unsigned int* __restrict__ w0, unsigned int* __restrict__ w1,
                               unsigned int* __restrict__ w2, unsigned int* __restrict__ w3)
{
    for (long long b = 0; b < count; ++b) {
        const unsigned long long block = first + (unsigned long long)b;
        w0[b] = (unsigned int)block;
        w1[b] = (unsigned int)(block >> 32);
        w2[b] = step;
        w3[b] = stream;
    }
    for (int round = 0; round < 10; ++round) {
        const unsigned int k0 = ll_philox_key0(key0, round), k1 = ll_philox_key1(key1, round);
        for (long long b = 0; b < count; ++b) ll_philox_round(w0[b], w1[b], w2[b], w3[b], k0, k1);
    }
}


// Philox4x32-10 words of blocks [start, start + count) of (key, step, stream): out is (count, 4) uint32.
LL_API void ll_philox_blocks(unsigned long long start, long long count, unsigned int step,
                                        unsigned int stream, unsigned int key0, unsigned int key1,
                                        unsigned int* out)
{
    unsigned int w0[LL_CHUNK_BLOCKS], w1[LL_CHUNK_BLOCKS], w2[LL_CHUNK_BLOCKS], w3[LL_CHUNK_BLOCKS];
    for (long long first = 0; first < count; first += LL_CHUNK_BLOCKS) {
        const long long n = count - first < LL_CHUNK_BLOCKS ? count - first : LL_CHUNK_BLOCKS;
        philox_pass(start + (unsigned long long)first, n, step, stream, key0, key1, w0, w1, w2, w3);
        for (long long b = 0; b < n; ++b) {
            unsigned int* o = out + 4 * (first + b);
            o[0] = w0[b];
            o[1] = w1[b];
            o[2] = w2[b];
            o[3] = w3[b];
        }
    }
}

LL_API void ll_log_array(const double* x, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_dm_log(x[i]);
}

LL_API void ll_exp_array(const double* x, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_dm_exp(x[i]);
}

LL_API void ll_expm1_array(const double* x, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_dm_expm1(x[i]);
}

LL_API void ll_pow_array(const double* x, const double* y, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_dm_pow(x[i], y[i]);
}

LL_API void ll_sincos_array(const double* x, double* s, double* c, long long n)
{
    for (long long i = 0; i < n; ++i) ll_dm_sincos(x[i], s + i, c + i);
}

LL_API void ll_ndtri_array(const double* p, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_dm_ndtri(p[i]);
}

// detmath.log_ext for positive finite x: (hi, lo) arrays.
LL_API void ll_log_ext_array(const double* x, double* hi, double* lo, long long n)
{
    for (long long i = 0; i < n; ++i) hi[i] = ll_dm_log_ext(x[i], lo + i);
}

// ---------------------------------------------------------------- Poisson tables

#define LL_GRID 16777216.0  // 2**24: log(k) split into a multiple of 2**-24 (summed exactly) and a remainder

// log(k!) for k = 0..n-1: the coarse parts (multiples of 2**-24) and the remainders summed separately,
// each strictly in sequence, so the sum is one fixed sequence of roundings.
LL_API void ll_log_factorials(double* out, long long n)
{
    double coarse_sum = 0.0, fine_sum = 0.0;
    if (n > 0) out[0] = 0.0;
    for (long long k = 1; k < n; ++k) {
        const double lg = ll_dm_log((double)k);
        const double coarse = ll_dm_floor(lg * LL_GRID + 0.5) / LL_GRID;
        coarse_sum += coarse;
        fine_sum += lg - coarse;
        out[k] = coarse_sum + fine_sum;
    }
}

// Inversion tables for 256 rates (poisson.build_tables): one running sum over every code's pmf in order,
// each code's CDF taken since its start.  Returns the threshold count m (thresholds holds sum(hi - lo)).
LL_API long long ll_build_tables(const double* lam, const double* log_lam, const long long* lo, const long long* hi,
                                 const double* logfact, unsigned int* thresholds, int* guide, int* kshift)
{
    const double two32 = 4294967296.0;
    long long m = 0;
    double csum = 0.0;
    for (int c = 0; c < 256; ++c) {
        const double base = csum;
        const long long first = m;
        long long zeros = 0;
        for (long long k = lo[c]; k < hi[c]; ++k) {
            csum += ll_dm_exp((double)k * log_lam[c] - lam[c] - logfact[k]);
            const double t = ll_dm_min(ll_dm_floor((csum - base) * two32 + 0.5), two32);
            if (t == 0.0) {
                zeros += 1;
            } else if (t < two32) {
                thresholds[m++] = (unsigned int)t;
            }
        }
        kshift[c] = (int)(lo[c] + zeros - first);
        long long j = first;  // guide[c, b] = first + how many of the code's thresholds lie in buckets below b
        for (int b = 0; b <= LL_GUIDE_BUCKETS; ++b) {
            while (j < m && (long long)(thresholds[j] >> LL_GUIDE_SHIFT) < b) ++j;
            guide[c * (LL_GUIDE_BUCKETS + 1) + b] = (int)j;
        }
    }
    return m;
}

// ---------------------------------------------------------------- the noise loop


// Poisson counts of `count` values by ll_poisson (table inversion, or the normal approximation).
static inline void poisson_pass(const ll_tables& tb, const unsigned char* codes, const unsigned int* wp,
                                long long count, int* k)
{
    for (long long i = 0; i < count; ++i) k[i] = (int)ll_poisson(tb, codes[i], wp[i]);
}

// ll_compose over `count` values with the image's model and curve flags made constants, so that each
// variant's loop is one straight line of arithmetic the compiler can vectorise.
template <int MODEL, int DARKEN, int LINEAR>
static inline void compose_fixed(ll_noise_params p, const ll_tables& tb, const unsigned char* codes,
                                 const int* k, const float* g, long long count, unsigned char* out)
{
    p.model = MODEL;
    p.darken = DARKEN;
    p.linear = LINEAR;
    for (long long i = 0; i < count; ++i) out[i] = ll_compose(p, tb, codes[i], k[i], g[i]);
}

template <int MODEL>
static inline void compose_model(const ll_noise_params& p, const ll_tables& tb, const unsigned char* codes,
                                 const int* k, const float* g, long long count, unsigned char* out)
{
    if (!p.darken && !p.linear) compose_fixed<MODEL, 0, 0>(p, tb, codes, k, g, count, out);
    else if (p.darken && !p.linear) compose_fixed<MODEL, 1, 0>(p, tb, codes, k, g, count, out);
    else if (!p.darken) compose_fixed<MODEL, 0, 1>(p, tb, codes, k, g, count, out);
    else compose_fixed<MODEL, 1, 1>(p, tb, codes, k, g, count, out);
}

static inline void compose_pass(const ll_noise_params& p, const ll_tables& tb, const unsigned char* codes,
                                const int* k, const float* g, long long count, unsigned char* out)
{
    if (p.model == LL_MODEL_POISSON_READ) compose_model<LL_MODEL_POISSON_READ>(p, tb, codes, k, g, count, out);
    else if (p.model == LL_MODEL_POISSON) compose_model<LL_MODEL_POISSON>(p, tb, codes, k, g, count, out);
    else compose_model<LL_MODEL_GAUSSIAN>(p, tb, codes, k, g, count, out);
}

// The noisy uint8 codes of n input codes (ll_noise_pair's values, block by block in order).
LL_API void ll_render_noisy(const unsigned char* codes, unsigned char* out, long long n,
                                      const ll_noise_params* params, const ll_tables* tables)
{
    const ll_noise_params p = *params;
    const ll_tables tb = *tables;
    unsigned int wp[2 * LL_CHUNK_BLOCKS], w0[LL_CHUNK_BLOCKS], w1[LL_CHUNK_BLOCKS], w2[LL_CHUNK_BLOCKS],
        w3[LL_CHUNK_BLOCKS];
    float g[2 * LL_CHUNK_BLOCKS];
    int k[2 * LL_CHUNK_BLOCKS];
    const long long nblocks = (n + 1) / 2;
    for (long long first = 0; first < nblocks; first += LL_CHUNK_BLOCKS) {
        const long long count = nblocks - first < LL_CHUNK_BLOCKS ? nblocks - first : LL_CHUNK_BLOCKS;
        const long long values = n - 2 * first < 2 * count ? n - 2 * first : 2 * count;
        philox_pass(first, count, p.step, LL_STREAM_NOISE, p.key0, p.key1, w0, w1, w2, w3);
        for (long long b = 0; b < count; ++b) {
            wp[2 * b] = w0[b];
            wp[2 * b + 1] = w1[b];
        }
        if (p.model != LL_MODEL_POISSON) {
            for (long long b = 0; b < count; ++b) ll_box_muller(w2[b], w3[b], g + 2 * b, g + 2 * b + 1);
        } else {
            for (long long i = 0; i < values; ++i) g[i] = 0.0f;
        }
        const unsigned char* c = codes + 2 * first;
        if (p.model != LL_MODEL_GAUSSIAN) {
            poisson_pass(tb, c, wp, values, k);
        } else {
            for (long long i = 0; i < values; ++i) k[i] = 0;
        }
        compose_pass(p, tb, c, k, g, values, out + 2 * first);
    }
}

// ---------------------------------------------------------------- the physics path

// The physics low image of an (H, W, 3) uint8 image: ll_phys_site over the mosaic into m (H*W doubles of
// scratch), then ll_phys_pixel over the image, as ll_phys_mosaic_kernel and ll_phys_process_kernel do.
LL_API void ll_phys_render(const ll_phys_params* params, const double* lut, const double* thresholds,
                                     const unsigned char* rgb, double* m, unsigned char* out)
{
    const ll_phys_params p = *params;
    const long long n = p.height * p.width;
    for (long long i = 0; i < n; ++i) ll_phys_site(p, lut, rgb, m, 0, 0, i);
    for (long long i = 0; i < n; ++i) ll_phys_pixel(p, thresholds, m, out, i);
}

// The uint16 raw mosaics (clean, low) of the even crop, without the image.
LL_API void ll_phys_raw(const ll_phys_params* params, const double* lut, const unsigned char* rgb,
                                  unsigned short* raw_clean, unsigned short* raw_low)
{
    const ll_phys_params p = *params;
    for (long long r = 0; r < p.raw_height; ++r)
        for (long long c = 0; c < p.raw_width; ++c) ll_phys_site(p, lut, rgb, 0, raw_clean, raw_low, r * p.width + c);
}
