// CUDA kernels of the CuPy backend (synth/cupy_backend.py compiles this with NVRTC).
//
// The backend inlines the local headers into one source string before compiling,
// so CuPy's on-disk kernel cache (keyed by source text and options) never serves
// a build of stale headers.  Compile with --fmad=false (see noise.cuh).
#include "noise.cuh"
#include "batch.cuh"
#include "physics.cuh"  // ll_phys_mosaic_kernel and ll_phys_process_kernel (synth/physics_gpu.py drives them)

// One fused pass per noisy output image: uint8 code -> Philox words -> Poisson
// search / Box-Muller -> compose -> clip -> optional darkening and sRGB curve ->
// uint8.  One thread per Philox block (two values); float data never leaves the
// registers.  `first` is the global index of codes[0] (even), so an image split
// into slices draws exactly the words of the unsplit image.
extern "C" __global__ void ll_noise_kernel(
    const unsigned char* __restrict__ codes, unsigned char* __restrict__ out,
    long long n, long long first,
    unsigned int key0, unsigned int key1, unsigned int step,
    int model, int darken, int linear,
    float inv_peak, float sigma, float alpha, float beta, float gamma,
    const unsigned int* __restrict__ thresholds, const int* __restrict__ guide,
    const int* __restrict__ kshift, const unsigned char* __restrict__ normal,
    const double* __restrict__ lam, const float* __restrict__ signal)
{
    const ll_noise_params p = {key0, key1, step, model, darken, linear, inv_peak, sigma, alpha, beta, gamma};
    const ll_tables tb = {thresholds, guide, kshift, normal, lam, signal};
    const long long blocks = (n + 1) / 2;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < blocks; j += stride)
        ll_noise_pair(p, tb, codes, out, n, first, j);
}

// Four table lookups on the bytes of one 32-bit word.
__device__ __forceinline__ unsigned int ll_lut_word(const unsigned char* t, unsigned int w)
{
    return (unsigned int)t[w & 255u] | ((unsigned int)t[(w >> 8) & 255u] << 8) |
           ((unsigned int)t[(w >> 16) & 255u] << 16) | ((unsigned int)t[w >> 24] << 24);
}

// Noise-free images: out[i] = lut[codes[i]] through a 256-byte table in shared memory.
// Sixteen bytes per access when both pointers allow it (CuPy allocations are 256-byte
// aligned; a slice may not be), so the kernel runs at memory speed.
extern "C" __global__ void ll_lut_kernel(
    const unsigned char* __restrict__ codes, unsigned char* __restrict__ out, long long n,
    const unsigned char* __restrict__ lut)
{
    __shared__ unsigned char table[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) table[i] = lut[i];
    __syncthreads();
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long start = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long done = 0;
    if ((((unsigned long long)codes | (unsigned long long)out) & 15) == 0) {
        const long long vecs = n / 16;
        const uint4* in16 = reinterpret_cast<const uint4*>(codes);
        uint4* out16 = reinterpret_cast<uint4*>(out);
        for (long long i = start; i < vecs; i += stride) {
            uint4 v = in16[i];
            v.x = ll_lut_word(table, v.x);
            v.y = ll_lut_word(table, v.y);
            v.z = ll_lut_word(table, v.z);
            v.w = ll_lut_word(table, v.w);
            out16[i] = v;
        }
        done = 16 * vecs;
    }
    for (long long i = done + start; i < n; i += stride) out[i] = table[codes[i]];
}

// A batch of small images (batch.cuh): blockIdx.y picks the job, x blocks stride over its value pairs.
// Jobs differ in size, so blocks past a small job's end exit at once; that costs little next to
// the per-image copies and launches the batch saves.
extern "C" __global__ void ll_batch_kernel(
    const unsigned char* __restrict__ blob, unsigned char* __restrict__ out, const ll_job* __restrict__ jobs)
{
    __shared__ ll_job job;  // read once per block, not once per value
    if (threadIdx.x == 0) job = jobs[blockIdx.y];
    __syncthreads();
    const long long pairs = (job.n + 1) / 2;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += stride)
        ll_batch_pair(blob, out, job, j);
}
