// The CPU build of the model: the very headers the GPU compiles (philox.cuh, detmath.cuh, noise.cuh,
// physics.cuh), driven by loops laid out for a CPU.
//
// Built at install into a small shared library (setup.py; no Python C API) and called through ctypes
// (synth/native.py), which releases the GIL for the length of each call.  Every per-value step is a
// header function, so the CPU and the GPU run one source; only the loops around them differ:
//
//   * the noise loop goes in chunks of LL_CHUNK_BLOCKS Philox blocks, one pass per stage (Philox in
//     structure-of-arrays rounds, Box-Muller, Poisson search, compose), so the compiler vectorises the
//     arithmetic passes;
//   * the physics path goes row by row: a row's sites take the steps of ll_phys_site, with many sites'
//     Poisson chains side by side, and a ring of three gained rows feeds ll_phys_pixel_rows;
//   * the scalar helpers (Philox blocks, the detmath functions, the Poisson tables) loop over arrays
//     for the Python side, which holds no copy of this arithmetic;
//   * each GPU kernel's body is exported too, looped serially (*_serial), for the tests.
//
// It must be compiled WITHOUT multiply-add contraction (-ffp-contract=off) and without -ffast-math:
// the bytes then do not depend on the compiler, the instruction set or the machine (ARCHITECTURE.md,
// "Reproducibility").  On x86-64 it is built for three instruction-set levels (ll_cpu_level).
#include "batch.cuh"
#include "noise.cuh"
#include "physics.cuh"

#include <stdlib.h>

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
                               unsigned int key0, unsigned int key1, unsigned int* __restrict__ w0,
                               unsigned int* __restrict__ w1, unsigned int* __restrict__ w2,
                               unsigned int* __restrict__ w3)
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
LL_API void ll_philox_blocks(unsigned long long start, long long count, unsigned int step, unsigned int stream,
                             unsigned int key0, unsigned int key1, unsigned int* out)
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

// noise.cuh's Box-Muller and Poisson search on arrays: for tests and statistics.
LL_API void ll_box_muller_array(const unsigned int* w_radius, const unsigned int* w_angle, float* n0, float* n1,
                                long long n)
{
    for (long long i = 0; i < n; ++i) ll_box_muller(w_radius[i], w_angle[i], n0 + i, n1 + i);
}

LL_API void ll_poisson_array(const ll_tables* tables, const unsigned char* codes, const unsigned int* words,
                             long long* out, long long n)
{
    const ll_tables tb = *tables;
    for (long long i = 0; i < n; ++i) out[i] = ll_poisson(tb, codes[i], words[i]);
}

// The physics samplers on arrays (ll_phys_poisson, ll_phys_tukey): for tests and statistics.
LL_API void ll_phys_poisson_array(const double* lam, const double* u, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_phys_poisson(lam[i], u[i]);
}

LL_API void ll_phys_tukey_array(const double* u, double lam, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_phys_tukey(u[i], lam);
}

// ll_phys_sensor over a whole H x W mosaic of clean DN values x (row r of the record's sensor): for tests,
// statistics and calibration checks.
LL_API void ll_phys_sensor_mosaic(const ll_phys_params* params, const double* x, double* out)
{
    const ll_phys_params p = *params;
    for (long long r = 0; r < p.height; ++r)
        for (long long c = 0; c < p.width; ++c) out[r * p.width + c] = ll_phys_sensor(p, x[r * p.width + c], r, c);
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
LL_API void ll_render_noisy(const unsigned char* codes, unsigned char* out, long long n, const ll_noise_params* params,
                            const ll_tables* tables)
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
//
// Row by row, as ll_phys_mosaic_kernel and ll_phys_process_kernel compute site by site: a row's sites
// are unprocessed (ll_phys_clean), get their words (ll_philox_round over the row's blocks), their
// Poisson counts (the steps of ll_phys_poisson, many sites' chains side by side), the rest of the
// sensor noise (ll_phys_after_shot) and the white balance back (ll_phys_gained); a ring of three gained
// rows feeds ll_phys_pixel_rows.  Each site takes exactly its ll_phys_site steps, so the bytes are the
// GPU's.

// Chain state of the sites in a Poisson search (structure of arrays, compacted as chains finish).
enum { CH_P, CH_K, CH_F, CH_CAP, CH_LAM, CH_U, CH_M, CH_PM, CH_FIELDS };

// Scratch for one mosaic row of up to `width` sites.
struct phys_row {
    double *x, *s, *lam, *u;            // clean DN, sensor DN, Poisson rate and uniform per site
    int* ch;                            // CFA colour per site
    unsigned int *shot, *read;          // the site's two words
    unsigned int *w0, *w1, *w2, *w3;    // Philox words of the row's blocks
    double* chain[CH_FIELDS];           // chain state; chain2 is the other half of a permutation
    double* chain2[CH_FIELDS];
    long long *site, *site2, *n, *n2;   // which site a chain belongs to; its terms to sum
    long long* bucket;                  // counting sort
    unsigned char* go;
    void* block;
};

static bool phys_row_alloc(phys_row* r, long long width)
{
    const long long w = width + 2, b = width / 2 + 2;
    const size_t bytes = sizeof(double) * (4 + 2 * CH_FIELDS) * w + sizeof(int) * w +
                         sizeof(unsigned int) * (2 * w + 4 * b) + sizeof(long long) * 4 * w + w + 64;
    char* m = (char*)malloc(bytes);
    if (!m) return false;
    r->block = m;
    double** d[] = {&r->x, &r->s, &r->lam, &r->u};
    for (double** q : d) { *q = (double*)m; m += sizeof(double) * w; }
    for (int f = 0; f < CH_FIELDS; ++f) { r->chain[f] = (double*)m; m += sizeof(double) * w; }
    for (int f = 0; f < CH_FIELDS; ++f) { r->chain2[f] = (double*)m; m += sizeof(double) * w; }
    long long** l[] = {&r->site, &r->site2, &r->n, &r->n2};
    for (long long** q : l) { *q = (long long*)m; m += sizeof(long long) * w; }
    r->ch = (int*)m; m += sizeof(int) * w;
    unsigned int** u[] = {&r->shot, &r->read};
    for (unsigned int** q : u) { *q = (unsigned int*)m; m += sizeof(unsigned int) * w; }
    unsigned int** v[] = {&r->w0, &r->w1, &r->w2, &r->w3};
    for (unsigned int** q : v) { *q = (unsigned int*)m; m += sizeof(unsigned int) * b; }
    r->go = (unsigned char*)m;
    r->bucket = 0;
    return true;
}

// Move chain j to position `to` of the other half, then (once all are moved) swap the halves.
static inline void chain_move(phys_row* r, long long j, long long to)
{
    for (int f = 0; f < CH_FIELDS; ++f) r->chain2[f][to] = r->chain[f][j];
    r->site2[to] = r->site[j];
    r->n2[to] = r->n[j];
}

static inline void chain_swap(phys_row* r)
{
    for (int f = 0; f < CH_FIELDS; ++f) { double* t = r->chain[f]; r->chain[f] = r->chain2[f]; r->chain2[f] = t; }
    long long* t = r->site; r->site = r->site2; r->site2 = t;
    t = r->n; r->n = r->n2; r->n2 = t;
}

// Walk chains [first, first + n) one step per pass (ll_phys_poisson's down or up walk) until each stops;
// each chain's count goes to counts[site].  The chains are compacted in place as they finish.
static void phys_walk(phys_row* r, long long first, long long n, bool down, double* counts)
{
    double *p = r->chain[CH_P] + first, *k = r->chain[CH_K] + first, *f = r->chain[CH_F] + first;
    double *lam = r->chain[CH_LAM] + first, *u = r->chain[CH_U] + first, *cap = r->chain[CH_CAP] + first;
    long long* site = r->site + first;
    unsigned char* go = r->go;
    while (n > 0) {
        if (down) {
            for (long long j = 0; j < n; ++j) go[j] = k[j] > 0 ? ll_phys_down_step(lam[j], u[j], p[j], k[j], f[j]) : 0;
        } else {
            for (long long j = 0; j < n; ++j)
                go[j] = f[j] <= u[j] ? ll_phys_up_step(lam[j], cap[j], p[j], k[j], f[j]) : 0;
        }
        long long live = 0;
        for (long long j = 0; j < n; ++j) {
            if (!go[j]) {
                counts[site[j]] = k[j];
                continue;
            }
            p[live] = p[j]; k[live] = k[j]; f[live] = f[j]; lam[live] = lam[j]; u[live] = u[j]; cap[live] = cap[j];
            site[live] = site[j];
            ++live;
        }
        n = live;
    }
}

// CDF(m) of each mode chain [0, n): its terms summed down from the mode, the longest sums first so that the
// chains still summing at term t are a prefix and each pass is one straight loop over it.
static void phys_sum_to_modes(phys_row* r, long long n)
{
    long long longest = 0;
    for (long long j = 0; j < n; ++j) longest = r->n[j] > longest ? r->n[j] : longest;
    long long* bucket = (long long*)calloc((size_t)longest + 2, sizeof(long long));
    if (bucket) {  // counting sort by the number of terms, longest first
        for (long long j = 0; j < n; ++j) bucket[longest - r->n[j] + 1] += 1;
        for (long long b = 1; b <= longest + 1; ++b) bucket[b] += bucket[b - 1];
        for (long long j = 0; j < n; ++j) chain_move(r, j, bucket[longest - r->n[j]]++);
        chain_swap(r);
        free(bucket);
        long long active = n;
        double *p = r->chain[CH_P], *k = r->chain[CH_K], *f = r->chain[CH_F], *lam = r->chain[CH_LAM];
        for (long long t = 0; t < longest; ++t) {
            while (active > 0 && r->n[active - 1] <= t) --active;
            for (long long j = 0; j < active; ++j) ll_phys_down_term(lam[j], p[j], k[j], f[j]);
        }
        return;
    }
    for (long long j = 0; j < n; ++j)  // out of memory for the sort: the same terms, one chain after another
        for (long long t = 0; t < r->n[j]; ++t)
            ll_phys_down_term(r->chain[CH_LAM][j], r->chain[CH_P][j], r->chain[CH_K][j], r->chain[CH_F][j]);
}

// ll_phys_poisson(lam[c], u[c]) for the row's first `n` sites, into counts.
static void phys_poisson_row(phys_row* r, long long n, double* counts)
{
    double** ch = r->chain;
    long long small = 0;  // small rates start at k = 0 and walk up, with no sum first
    for (long long c = 0; c < n; ++c) {
        const double lam = r->lam[c];
        if (!(lam > 0)) { counts[c] = 0.0; continue; }
        if (lam > LL_PHYS_LAMBDA_EXACT_MAX) { counts[c] = ll_dm_poisson_normal(lam, r->u[c]); continue; }
        if (lam >= LL_PHYS_LAMBDA_SMALL) continue;
        const double p0 = ll_dm_exp(-lam);
        ch[CH_P][small] = p0; ch[CH_F][small] = p0; ch[CH_K][small] = 0.0; ch[CH_CAP][small] = LL_PHYS_SMALL_CAP;
        ch[CH_LAM][small] = lam; ch[CH_U][small] = r->u[c]; r->site[small] = c;
        ++small;
    }
    phys_walk(r, 0, small, false, counts);
    long long modes = 0;
    for (long long c = 0; c < n; ++c) {
        const double lam = r->lam[c];
        if (!(lam >= LL_PHYS_LAMBDA_SMALL && lam <= LL_PHYS_LAMBDA_EXACT_MAX)) continue;
        double m, pm, lo, cap;
        ll_phys_mode_start(lam, &m, &pm, &lo, &cap);
        ch[CH_P][modes] = pm; ch[CH_K][modes] = m; ch[CH_F][modes] = pm; ch[CH_CAP][modes] = cap;
        ch[CH_LAM][modes] = lam; ch[CH_U][modes] = r->u[c]; ch[CH_M][modes] = m; ch[CH_PM][modes] = pm;
        r->site[modes] = c;
        r->n[modes] = (long long)(m - lo);
        ++modes;
    }
    if (modes == 0) return;
    phys_sum_to_modes(r, modes);
    // Back at the mode with CDF(m) in f: the down walks first, then the up walks.
    long long downs = 0;
    for (long long j = 0; j < modes; ++j) downs += r->chain[CH_U][j] < r->chain[CH_F][j];
    long long d = 0, u = downs;
    for (long long j = 0; j < modes; ++j) {
        r->chain[CH_K][j] = r->chain[CH_M][j];
        r->chain[CH_P][j] = r->chain[CH_PM][j];
        chain_move(r, j, r->chain[CH_U][j] < r->chain[CH_F][j] ? d++ : u++);
    }
    chain_swap(r);
    phys_walk(r, 0, downs, true, counts);
    phys_walk(r, downs, modes - downs, false, counts);
}

// Sensor DN of the first `n` sites of mosaic row `row` into r->s (their clean DN in r->x, colours in r->ch).
static void phys_sensor_row(const ll_phys_params& p, const double* lut, const unsigned char* rgb, phys_row* r,
                            long long row, long long n)
{
    for (long long c = 0; c < n; ++c) r->x[c] = ll_phys_clean(p, lut, rgb, row, c, r->ch + c);
    // The words of sites row*W .. row*W + n - 1: site i uses words 2 (i & 1) and 2 (i & 1) + 1 of block i >> 1.
    const unsigned long long i0 = (unsigned long long)(row * p.width);
    const unsigned long long b0 = i0 >> 1, b1 = (i0 + (unsigned long long)n - 1) >> 1;
    philox_pass(b0, (long long)(b1 - b0 + 1), p.step, LL_PHYS_STREAM_SITES, p.key0, p.key1, r->w0, r->w1, r->w2, r->w3);
    for (long long c = 0; c < n; ++c) {
        const unsigned long long i = i0 + (unsigned long long)c;
        const long long b = (long long)((i >> 1) - b0);
        const bool odd = (i & 1) != 0;
        r->shot[c] = odd ? r->w2[b] : r->w0[b];
        r->read[c] = odd ? r->w3[b] : r->w1[b];
    }
    const double* x = r->x;
    if (p.flags & LL_PHYS_SHOT) {
        for (long long c = 0; c < n; ++c) {
            r->lam[c] = x[c] / p.K;
            r->u[c] = ll_phys_uniform(r->shot[c]);
        }
        phys_poisson_row(r, n, r->s);
        for (long long c = 0; c < n; ++c) r->s[c] = r->s[c] * p.K;
    } else {
        for (long long c = 0; c < n; ++c) r->s[c] = x[c];
    }
    const double row_z = (p.flags & LL_PHYS_ROW) ? ll_phys_row_normal(p, row) : 0.0;
    double* read = r->lam;  // free again: the read noise of each site
    const double lam = p.read_lambda;
    if ((p.flags & LL_PHYS_TUKEY) && lam != 0 && lam >= -LL_DM_POW_UNIT_MAX_Y && lam <= LL_DM_POW_UNIT_MAX_Y) {
        // ll_phys_read_noise's Tukey branch for a real sensor's shape, as one straight loop
        for (long long c = 0; c < n; ++c) read[c] = p.read_scale * ll_phys_tukey_unit(ll_phys_uniform(r->read[c]), lam);
    } else {
        for (long long c = 0; c < n; ++c) read[c] = ll_phys_read_noise(p, r->read[c]);
    }
    for (long long c = 0; c < n; ++c) r->s[c] = ll_phys_after_shot(p, r->s[c], read[c], row_z, row, c);
}

// The physics low image of an (H, W, 3) uint8 image into out; m is scratch for three gained rows (3 W doubles).
// Returns 0, or 1 when scratch memory could not be had.
LL_API int ll_phys_render(const ll_phys_params* params, const double* lut, const double* thresholds,
                          const unsigned char* rgb, double* m, unsigned char* out)
{
    const ll_phys_params p = *params;
    const long long h = p.height, w = p.width;
    phys_row r;
    if (h <= 0 || w <= 0) return 0;
    if (!phys_row_alloc(&r, w)) return 1;
    for (long long q = 0; q <= h; ++q) {
        if (q < h) {
            phys_sensor_row(p, lut, rgb, &r, q, w);
            double* mq = m + (q % 3) * w;
            for (long long c = 0; c < w; ++c) mq[c] = ll_phys_gained(p, r.s[c], r.ch[c]);
        }
        // Pixel row q - 1 once rows q - 2 .. q exist (ll_phys_mirror keeps to them); the last after the loop.
        const long long y = q - 1;
        if (y < 0 || (q < h && y == h - 1)) continue;
        const double* mu = m + (ll_phys_mirror(y - 1, h) % 3) * w;
        const double* mc = m + (y % 3) * w;
        const double* md = m + (ll_phys_mirror(y + 1, h) % 3) * w;
        unsigned char* o = out + 3 * y * w;
        for (long long c = 0; c < w; ++c) ll_phys_pixel_rows(p, thresholds, mu, mc, md, o + 3 * c, y, c);
    }
    free(r.block);
    return 0;
}

// The uint16 raw mosaics (clean, low) of the even crop, without the image.  Returns 0, or 1 out of memory.
LL_API int ll_phys_raw(const ll_phys_params* params, const double* lut, const unsigned char* rgb,
                       unsigned short* raw_clean, unsigned short* raw_low)
{
    const ll_phys_params p = *params;
    const long long rw = p.raw_width;
    phys_row r;
    if (p.raw_height <= 0 || rw <= 0) return 0;
    if (!phys_row_alloc(&r, rw)) return 1;
    for (long long row = 0; row < p.raw_height; ++row) {
        phys_sensor_row(p, lut, rgb, &r, row, rw);
        for (long long c = 0; c < rw; ++c) {
            raw_clean[row * rw + c] = ll_phys_to_dn(p, r.x[c]);
            raw_low[row * rw + c] = ll_phys_to_dn(p, r.s[c]);
        }
    }
    free(r.block);
    return 0;
}

// ---------------------------------------------------------------- the GPU kernels' bodies, run serially
//
// What one CUDA thread computes, looped over every index as the grid-stride loops of kernels.cu and
// physics.cuh do.  Tests compare the CPU drivers above with these, so every CPU run also checks the
// arithmetic each GPU thread performs.

// ll_noise_kernel's body over values [first, first + n) of an image (first even).
LL_API void ll_noise_kernel_serial(const unsigned char* codes, unsigned char* out, long long n, long long first,
                                   const ll_noise_params* params, const ll_tables* tables)
{
    for (long long j = 0; j < (n + 1) / 2; ++j) ll_noise_pair(*params, *tables, codes, out, n, first, j);
}

// ll_batch_kernel's body over every value pair of every job.
LL_API void ll_batch_kernel_serial(const unsigned char* blob, unsigned char* out, const ll_job* jobs, int njobs)
{
    for (int k = 0; k < njobs; ++k)
        for (long long j = 0; j < (jobs[k].n + 1) / 2; ++j) ll_batch_pair(blob, out, jobs[k], j);
}

// ll_phys_mosaic_kernel's body over every site (m, raw_clean and raw_low may each be null).
LL_API void ll_phys_mosaic_serial(const ll_phys_params* params, const double* lut, const unsigned char* rgb, double* m,
                                  unsigned short* raw_clean, unsigned short* raw_low)
{
    for (long long i = 0; i < params->height * params->width; ++i)
        ll_phys_site(*params, lut, rgb, m, raw_clean, raw_low, i);
}

// ll_phys_process_kernel's body over every pixel.
LL_API void ll_phys_process_serial(const ll_phys_params* params, const double* thresholds, const double* m,
                                   unsigned char* out)
{
    for (long long i = 0; i < params->height * params->width; ++i) ll_phys_pixel(*params, thresholds, m, out, i);
}

// sizeof and field offsets of the records both drivers share (native.py's dtypes are checked against them):
// which 0 = ll_noise_params, 1 = ll_phys_params, 2 = ll_job.  Returns the number of fields written after out[0].
LL_API int ll_record_layout(int which, long long* out)
{
    if (which == 0) {
        ll_noise_params p;
        const char* b = (const char*)&p;
        const void* f[] = {&p.key0, &p.key1, &p.step, &p.model, &p.darken, &p.linear, &p.inv_peak, &p.sigma,
                           &p.alpha, &p.beta, &p.gamma};
        out[0] = (long long)sizeof p;
        for (int i = 0; i < 11; ++i) out[i + 1] = (long long)((const char*)f[i] - b);
        return 11;
    }
    if (which == 1) {
        ll_phys_params p;
        const char* b = (const char*)&p;
        const void* f[] = {&p.key0, &p.key1, &p.step, &p.flags, &p.height, &p.width, &p.raw_width, &p.raw_height,
                           &p.K, &p.read_scale, &p.read_lambda, &p.row_sigma, &p.black, &p.white, &p.scale, &p.bias,
                           &p.rgb2cam, &p.cam2rgb, &p.gains};
        out[0] = (long long)sizeof p;
        for (int i = 0; i < 19; ++i) out[i + 1] = (long long)((const char*)f[i] - b);
        return 19;
    }
    ll_job j;
    const char* b = (const char*)&j;
    const void* f[] = {&j.codes, &j.out, &j.n, &j.tables, &j.p.key0, &j.p.key1, &j.p.step, &j.p.model, &j.p.darken,
                       &j.p.linear, &j.p.inv_peak, &j.p.sigma, &j.p.alpha, &j.p.beta, &j.p.gamma, &j.clean};
    out[0] = (long long)sizeof j;
    for (int i = 0; i < 16; ++i) out[i + 1] = (long long)((const char*)f[i] - b);
    return 16;
}

// The model's codes and flags (native.py's MODEL_CODES and PHYS_FLAGS are checked against them):
// LL_MODEL_POISSON_READ, LL_MODEL_POISSON, LL_MODEL_GAUSSIAN, then the six LL_PHYS_* flags, then the streams.
LL_API int ll_constants(long long* out)
{
    const long long v[] = {LL_MODEL_POISSON_READ, LL_MODEL_POISSON, LL_MODEL_GAUSSIAN, LL_PHYS_SHOT, LL_PHYS_TUKEY,
                           LL_PHYS_GAUSS, LL_PHYS_ROW, LL_PHYS_QUANT, LL_PHYS_BIAS, LL_STREAM_PARAMS, LL_STREAM_NOISE,
                           LL_PHYS_STREAM_SITES, LL_PHYS_STREAM_ROWS};
    const int n = (int)(sizeof v / sizeof v[0]);
    for (int i = 0; i < n; ++i) out[i] = v[i];
    return n;
}
