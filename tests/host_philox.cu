// Host-side harness: the CUDA backend's shared device code, compiled for the CPU.
//
// tests/test_cuda_sources.py builds this as a shared library
//   nvcc -x cu -std=c++17 -shared -Xcompiler -fPIC,-ffp-contract=off -cudart none
//        -I lowlight_gpu/synth tests/host_philox.cu -o libllhost.so
// and calls it through ctypes, so the Philox words, the Poisson table search and
// the whole per-value kernel body (ll_noise_pair) are checked against the numpy
// reference on machines without a GPU; so is the batched kernel's job table.
#include "batch.cuh"
#include "detmath.cuh"

extern "C" {

// Philox4x32-10 of n counters (4 words each) under n keys (2 words each).
void ll_host_philox(const unsigned int* counters, const unsigned int* keys, unsigned int* out, long long n)
{
    for (long long i = 0; i < n; ++i) {
        const unsigned int* c = counters + 4 * i;
        const ll_words w = ll_philox4x32_10(c[0], c[1], c[2], c[3], keys[2 * i], keys[2 * i + 1]);
        for (int j = 0; j < 4; ++j) out[4 * i + j] = w.w[j];
    }
}

// Box-Muller of n (radius word, angle word) pairs into n (n0, n1) float pairs.
void ll_host_box_muller(const unsigned int* words, float* out, long long n)
{
    for (long long i = 0; i < n; ++i) ll_box_muller(words[2 * i], words[2 * i + 1], out + 2 * i, out + 2 * i + 1);
}

// Poisson counts of n (code, word) pairs through the tables of poisson.build_tables.
void ll_host_poisson(const unsigned int* thresholds, const int* guide, const int* kshift,
                     const unsigned char* normal, const double* lam,
                     const unsigned char* codes, const unsigned int* words, long long* out, long long n)
{
    const ll_tables tb = {thresholds, guide, kshift, normal, lam, 0};
    for (long long i = 0; i < n; ++i) out[i] = ll_poisson(tb, codes[i], words[i]);
}

// The body of ll_noise_kernel run serially: same arguments, same order.
void ll_host_noise(const unsigned char* codes, unsigned char* out, long long n, long long first,
                   unsigned int key0, unsigned int key1, unsigned int step,
                   int model, int darken, int linear,
                   float inv_peak, float sigma, float alpha, float beta, float gamma,
                   const unsigned int* thresholds, const int* guide, const int* kshift,
                   const unsigned char* normal, const double* lam, const float* signal)
{
    const ll_noise_params p = {key0, key1, step, model, darken, linear, inv_peak, sigma, alpha, beta, gamma};
    const ll_tables tb = {thresholds, guide, kshift, normal, lam, signal};
    for (long long j = 0; j < (n + 1) / 2; ++j) ll_noise_pair(p, tb, codes, out, n, first, j);
}

// The body of ll_batch_kernel run serially: every value pair of every job.
void ll_host_batch(const unsigned char* blob, unsigned char* out, const ll_job* jobs, int njobs)
{
    for (int k = 0; k < njobs; ++k)
        for (long long j = 0; j < (jobs[k].n + 1) / 2; ++j) ll_batch_pair(blob, out, jobs[k], j);
}

// sizeof(ll_job) and the byte offset of each field, in declaration order (ll_noise_params flattened).
int ll_host_job_layout(long long* out)
{
    ll_job job;
    const char* base = (const char*)&job;
    const void* fields[] = {&job.codes, &job.out, &job.n, &job.tables, &job.p.key0, &job.p.key1, &job.p.step,
                            &job.p.model, &job.p.darken, &job.p.linear, &job.p.inv_peak, &job.p.sigma,
                            &job.p.alpha, &job.p.beta, &job.p.gamma, &job.clean};
    const int count = (int)(sizeof(fields) / sizeof(fields[0]));
    out[0] = (long long)sizeof(ll_job);
    for (int i = 0; i < count; ++i) out[i + 1] = (long long)((const char*)fields[i] - base);
    return count;
}

// detmath function fn on n inputs (x, and y for pow): 0 log, 1 exp, 2 expm1, 3 pow, 4 sin, 5 cos,
// 6 ndtri, 7 and 8 the hi and lo parts of log_ext (tests/test_detmath.py).
void ll_host_detmath(int fn, const double* x, const double* y, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) {
        double a = 0.0, b = 0.0;
        switch (fn) {
        case 0: out[i] = ll_dm_log(x[i]); break;
        case 1: out[i] = ll_dm_exp(x[i]); break;
        case 2: out[i] = ll_dm_expm1(x[i]); break;
        case 3: out[i] = ll_dm_pow(x[i], y[i]); break;
        case 4: ll_dm_sincos(x[i], &a, &b); out[i] = a; break;
        case 5: ll_dm_sincos(x[i], &a, &b); out[i] = b; break;
        case 6: out[i] = ll_dm_ndtri(x[i]); break;
        case 7: out[i] = ll_dm_log_ext(x[i], &b); break;
        case 8: ll_dm_log_ext(x[i], &b); out[i] = b; break;
        default: out[i] = 0.0;
        }
    }
}

}  // extern "C"
