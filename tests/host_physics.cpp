// Host-side harness of synth/physics.cuh: its device functions compiled for the CPU.
//
// tests/test_physics_cuda.py builds this as a shared library with
//   g++ -x c++ -std=c++17 -O2 -ffp-contract=off -shared -fPIC -I lowlight_gpu/synth tests/host_physics.cpp
// and runs the two kernels' bodies serially through ctypes, against the numpy reference.
#include "physics.cuh"

#include <cstddef>

extern "C" {

// The body of ll_phys_mosaic_kernel over every site.
void ll_host_phys_mosaic(const ll_phys_params* p, const double* lut, const unsigned char* rgb, double* m,
                         unsigned short* raw_clean, unsigned short* raw_low)
{
    for (long long i = 0; i < p->height * p->width; ++i) ll_phys_site(*p, lut, rgb, m, raw_clean, raw_low, i);
}

// The body of ll_phys_process_kernel over every pixel.
void ll_host_phys_process(const ll_phys_params* p, const double* thresholds, const double* m, unsigned char* out)
{
    for (long long i = 0; i < p->height * p->width; ++i) ll_phys_pixel(*p, thresholds, m, out, i);
}

// physics.poisson_counts and physics.tukey_lambda, value by value.
void ll_host_phys_poisson(const double* lam, const double* u, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_phys_poisson(lam[i], u[i]);
}

void ll_host_phys_tukey(const double* u, double lam, double* out, long long n)
{
    for (long long i = 0; i < n; ++i) out[i] = ll_phys_tukey(u[i], lam);
}

// sizeof(ll_phys_params) and the byte offset of each field, in declaration order.
int ll_host_phys_layout(long long* out)
{
    const long long offs[] = {
        (long long)offsetof(ll_phys_params, key0), (long long)offsetof(ll_phys_params, key1),
        (long long)offsetof(ll_phys_params, step), (long long)offsetof(ll_phys_params, flags),
        (long long)offsetof(ll_phys_params, height), (long long)offsetof(ll_phys_params, width),
        (long long)offsetof(ll_phys_params, raw_width), (long long)offsetof(ll_phys_params, raw_height),
        (long long)offsetof(ll_phys_params, K), (long long)offsetof(ll_phys_params, read_scale),
        (long long)offsetof(ll_phys_params, read_lambda), (long long)offsetof(ll_phys_params, row_sigma),
        (long long)offsetof(ll_phys_params, black), (long long)offsetof(ll_phys_params, white),
        (long long)offsetof(ll_phys_params, scale), (long long)offsetof(ll_phys_params, bias),
        (long long)offsetof(ll_phys_params, rgb2cam), (long long)offsetof(ll_phys_params, cam2rgb),
        (long long)offsetof(ll_phys_params, gains)};
    const int n = (int)(sizeof(offs) / sizeof(offs[0]));
    out[0] = (long long)sizeof(ll_phys_params);
    for (int i = 0; i < n; ++i) out[i + 1] = offs[i];
    return n;
}

}
