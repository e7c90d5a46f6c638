// Many small output images in one launch: the job table of ll_batch_kernel.
//
// Small images cost more in per-call overhead (copies, launches, stream
// synchronisation, Python) than in kernel time, so cupy_backend groups the
// images of concurrent threads: one upload holds every input and table, one
// launch renders every output, one download returns them.  Each job reuses the
// per-image code (ll_noise_pair, or the clean LUT), so a batched image equals
// the image rendered alone.  __host__ __device__ like noise.cuh, so the model's CPU
// library runs this exact body serially for the tests (native.cpp's ll_batch_kernel_serial).
#pragma once

#include "noise.cuh"

#define LL_JOB_TABLES 6

// One output image of a batch.  cupy_backend.JOB_DTYPE mirrors this layout
// (120 bytes, 8-byte aligned); a host test compares the two field by field.
struct ll_job {
    long long codes;                  // byte offset of the input codes in the blob
    long long out;                    // byte offset of this output in the output buffer
    long long n;                      // values in the image
    long long tables[LL_JOB_TABLES];  // byte offsets in the blob: thresholds, guide, kshift, normal, lam,
                                      // signal (ll_tables order); for a clean job tables[0] is its 256-byte LUT
    ll_noise_params p;                // scalars of a noisy job (cupy_backend.noise_args order)
    int clean;                        // 1: out = lut[code], no noise
};

// Values 2j and 2j + 1 of one job (the same pairing as ll_noise_pair, so Philox block j serves them).
LL_HD void ll_batch_pair(const unsigned char* blob, unsigned char* outbuf, const ll_job& job, long long j)
{
    const unsigned char* codes = blob + job.codes;
    unsigned char* out = outbuf + job.out;
    if (job.clean) {
        const unsigned char* lut = blob + job.tables[0];
        const long long i = 2 * j;
        out[i] = lut[codes[i]];
        if (i + 1 < job.n) out[i + 1] = lut[codes[i + 1]];
        return;
    }
    const ll_tables tb = {(const unsigned int*)(blob + job.tables[0]), (const int*)(blob + job.tables[1]),
                          (const int*)(blob + job.tables[2]), blob + job.tables[3],
                          (const double*)(blob + job.tables[4]), (const float*)(blob + job.tables[5])};
    ll_noise_pair(job.p, tb, codes, out, job.n, 0, j);
}
