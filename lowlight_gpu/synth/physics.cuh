// Camera-physics noise (noise.model physics): the model of each mosaic site and output pixel.
//
// Two kernels, no host round trip between them (synth/physics_gpu.py launches both on one stream):
//   ll_phys_mosaic_kernel   one thread per mosaic site: unprocess + RGGB mosaic + sensor noise in DN,
//                           writes the white-balanced raw value in [0, 1] (and the uint16 raw files);
//   ll_phys_process_kernel  one thread per output pixel: bilinear demosaic + cam2rgb + 8-bit codes.
// Everything else (the per-code linear LUT, the 255 code thresholds, the matrices) is computed once
// per image on the CPU by physics.py and uploaded with the parameters.
//
// The functions are __host__ __device__, float64 throughout, with detmath.cuh for every
// transcendental; the model's CPU library (native.cpp) runs the same steps row by row, so both
// backends give the same bytes.  Compile with --fmad=false / -ffp-contract=off.
#pragma once

#include "philox.cuh"
#include "detmath.cuh"

#define LL_PHYS_STREAM_SITES 80u  // physics.STREAM_SITES
#define LL_PHYS_STREAM_ROWS 81u   // physics.STREAM_ROWS
#define LL_PHYS_LAMBDA_SMALL 30.0
#define LL_PHYS_LAMBDA_EXACT_MAX 1e4
#define LL_PHYS_SMALL_CAP 200.0
#define LL_PHYS_TWO_PI 6.283185307179586
#define LL_PHYS_INV_2_32 2.3283064365386963e-10
#define LL_PHYS_THRESHOLDS 255

// noise.components as bits (native.PHYS_FLAGS; tests/test_model.py checks the two agree)
#define LL_PHYS_SHOT 1
#define LL_PHYS_TUKEY 2
#define LL_PHYS_GAUSS 4
#define LL_PHYS_ROW 8
#define LL_PHYS_QUANT 16
#define LL_PHYS_BIAS 32

// One image's scalars (native.PHYS_PARAMS_DTYPE mirrors this layout; tests/test_model.py compares them).
struct ll_phys_params {
    unsigned int key0, key1;  // rng.split_key(seed)
    unsigned int step;        // the progressive step word (0: the final image)
    int flags;                // LL_PHYS_* components
    long long height, width;  // of the image and its mosaic
    long long raw_width, raw_height;  // even-cropped raw outputs
    double K, read_scale, read_lambda, row_sigma;
    double black, white, scale;       // black level, white level, white - black
    double bias[4];                   // DN, raster order of the 2x2 cell
    double rgb2cam[9], cam2rgb[9];    // row-major
    double gains[3];                  // R, G, B: white balance times brightness
};

// physics.uniform: a word to (w + 0.5) / 2**32.
LL_HD double ll_phys_uniform(unsigned int w) { return ((double)w + 0.5) * LL_PHYS_INV_2_32; }

// physics.stirling_tail.
LL_HD double ll_phys_stirling_tail(double m)
{
    const double im = 1.0 / m;
    const double im2 = im * im;
    return im * (1.0 / 12.0 - im2 * (1.0 / 360.0 - im2 * (1.0 / 1260.0)));
}

// The exact Poisson inversion below is a chain of pmf terms, p_k = p_(k-1) * lam / k; its steps are
// separate functions so that a CPU driver can advance many sites' chains side by side (one term of each
// per pass, which vectorises) and still take, per site, the very steps of ll_phys_poisson.

// One step up from k: CDF(k) <= u, so move to k + 1.  Returns whether the walk may go on (k below cap).
LL_HD bool ll_phys_up_step(double lam, double cap, double& p, double& k, double& f)
{
    k += 1.0;
    p = p * lam / k;
    f += p;
    return k < cap;
}

// One term of CDF(m) summed from the mode down: the pmf at k - 1 from the pmf at k.
LL_HD void ll_phys_down_term(double lam, double& p, double& k, double& f)
{
    p = p * k / lam;
    k -= 1.0;
    f += p;
}

// One step down from k (k > 0): while CDF(k - 1) = f - p > u, move to k - 1.  Returns whether it moved.
LL_HD bool ll_phys_down_step(double lam, double u, double& p, double& k, double& f)
{
    const double fp = f - p;
    if (!(fp > u)) return false;
    f = fp;
    p = p * k / lam;
    k -= 1.0;
    return true;
}

// The start of a mode search (LAMBDA_SMALL <= lam <= LAMBDA_EXACT_MAX): the mode m, its pmf, the lowest k
// summed into CDF(m), and the cap of the upward walk.
LL_HD void ll_phys_mode_start(double lam, double* m, double* pm, double* lo, double* cap)
{
    *m = ll_dm_floor(lam);
    const double log_pm = (*m * ll_dm_log(lam / *m) + (*m - lam)) - 0.5 * ll_dm_log(LL_PHYS_TWO_PI * *m) -
                          ll_phys_stirling_tail(*m);
    *pm = ll_dm_exp(log_pm);
    *lo = ll_dm_max(*m - ll_dm_floor(7.0 * ll_dm_sqrt(lam)) - 5.0, 0.0);
    *cap = *m + ll_dm_floor(10.0 * ll_dm_sqrt(lam)) + 20.0;
}

// physics.poisson_counts for one site: the smallest k with CDF(k) > u.
LL_HD double ll_phys_poisson(double lam, double u)
{
    if (!(lam > 0)) return 0.0;
    if (lam < LL_PHYS_LAMBDA_SMALL) {
        double p = ll_dm_exp(-lam), f = p, k = 0.0;
        while (f <= u && ll_phys_up_step(lam, LL_PHYS_SMALL_CAP, p, k, f)) {}
        return k;
    }
    if (lam > LL_PHYS_LAMBDA_EXACT_MAX) return ll_dm_poisson_normal(lam, u);
    double m, pm, lo, cap;
    ll_phys_mode_start(lam, &m, &pm, &lo, &cap);
    double f = pm, p = pm, k = m;
    while (k > lo) ll_phys_down_term(lam, p, k, f);  // CDF(m): the pmf summed from m down to lo
    k = m;
    p = pm;
    if (u < f) {
        while (k > 0 && ll_phys_down_step(lam, u, p, k, f)) {}  // down while CDF(k - 1) > u
        return k;
    }
    while (f <= u && ll_phys_up_step(lam, cap, p, k, f)) {}  // up while CDF(k) <= u
    return k;
}

// physics.tukey_lambda for a shape 0 < |lam| <= LL_DM_POW_UNIT_MAX_Y (branch-free; see ll_phys_tukey).
LL_HD double ll_phys_tukey_unit(double u, double lam)
{
    return (ll_dm_pow_unit(u, lam) - ll_dm_pow_unit(1.0 - u, lam)) / lam;
}

// physics.tukey_lambda.  u and 1 - u are uniforms in [2**-33, 1), so for the shapes of real sensors
// (|lam| <= LL_DM_POW_UNIT_MAX_Y) pow needs none of its special cases.
LL_HD double ll_phys_tukey(double u, double lam)
{
    const double v = 1.0 - u;
    if (lam == 0) return ll_dm_log(u) - ll_dm_log(v);
    if (lam >= -LL_DM_POW_UNIT_MAX_Y && lam <= LL_DM_POW_UNIT_MAX_Y) return ll_phys_tukey_unit(u, lam);
    return (ll_dm_pow(u, lam) - ll_dm_pow(v, lam)) / lam;
}

// physics.row_normals for one sensor row.
LL_HD double ll_phys_row_normal(const ll_phys_params& p, long long row)
{
    const ll_words w = ll_philox4x32_10((unsigned int)row, (unsigned int)((unsigned long long)row >> 32), p.step,
                                        LL_PHYS_STREAM_ROWS, p.key0, p.key1);
    return ll_dm_ndtri(ll_phys_uniform(w.w[0]));
}

// RGGB: the colour (0 R, 1 G, 2 B) of raster cell (r & 1) * 2 + (c & 1).
LL_HD int ll_phys_channel(int cell) { return cell == 0 ? 0 : (cell == 3 ? 2 : 1); }

// The Philox words of site i = r * W + c: (shot word, read word) of its block (stream STREAM_SITES).
LL_HD void ll_phys_site_words(const ll_phys_params& p, long long r, long long c, unsigned int* shot,
                              unsigned int* read)
{
    const unsigned long long i = (unsigned long long)(r * p.width + c);
    const unsigned long long block = i >> 1;
    const ll_words w = ll_philox4x32_10((unsigned int)block, (unsigned int)(block >> 32), p.step,
                                        LL_PHYS_STREAM_SITES, p.key0, p.key1);
    const int at = (int)(i & 1) * 2;
    *shot = w.w[at];
    *read = w.w[at + 1];
}

// The read noise of a site in DN from its read word: Tukey-lambda or Gaussian, by the components (0 if neither).
LL_HD double ll_phys_read_noise(const ll_phys_params& p, unsigned int read_word)
{
    if (p.flags & LL_PHYS_TUKEY) return p.read_scale * ll_phys_tukey(ll_phys_uniform(read_word), p.read_lambda);
    if (p.flags & LL_PHYS_GAUSS) return p.read_scale * ll_dm_ndtri(ll_phys_uniform(read_word));
    return 0.0;
}

// physics.add_sensor_noise after the shot noise: read (ll_phys_read_noise), row, bias, quantisation, then the
// ADC's range.  `row_z` is ll_phys_row_normal of the site's row (read only when the row component is on).
LL_HD double ll_phys_after_shot(const ll_phys_params& p, double x, double read, double row_z, long long r,
                                long long c)
{
    if (p.flags & (LL_PHYS_TUKEY | LL_PHYS_GAUSS)) x = x + read;
    if (p.flags & LL_PHYS_ROW) x = x + p.row_sigma * row_z;
    if (p.flags & LL_PHYS_BIAS) x = x + p.bias[(int)((r & 1) * 2 + (c & 1))];
    if (p.flags & LL_PHYS_QUANT) x = ll_dm_floor(x + 0.5);
    return ll_dm_min(ll_dm_max(x, -p.black), p.scale);
}

// physics.add_sensor_noise for one site: clean DN x -> sensor DN in [-black, white - black].
LL_HD double ll_phys_sensor(const ll_phys_params& p, double x, long long r, long long c)
{
    unsigned int shot, read;
    ll_phys_site_words(p, r, c, &shot, &read);
    if (p.flags & LL_PHYS_SHOT) x = ll_phys_poisson(x / p.K, ll_phys_uniform(shot)) * p.K;
    const double row_z = (p.flags & LL_PHYS_ROW) ? ll_phys_row_normal(p, r) : 0.0;
    return ll_phys_after_shot(p, x, ll_phys_read_noise(p, read), row_z, r, c);
}

// physics.to_dn: DN above black to a raw file value.
LL_HD unsigned short ll_phys_to_dn(const ll_phys_params& p, double x)
{
    const double v = ll_dm_floor(x + (p.black + 0.5));
    return (unsigned short)ll_dm_min(ll_dm_max(v, 0.0), p.white);
}

// The clean value of a mosaic site in DN above black (physics.mosaic_rows before the noise): unprocess
// the pixel, keep its CFA colour, undo the white balance; and that colour (0 R, 1 G, 2 B).
LL_HD double ll_phys_clean(const ll_phys_params& p, const double* lut, const unsigned char* rgb, long long r,
                           long long c, int* channel)
{
    const int ch = ll_phys_channel((int)((r & 1) * 2 + (c & 1)));
    const unsigned char* px = rgb + 3 * (r * p.width + c);
    const double* row = p.rgb2cam + 3 * ch;
    const double cam = (row[0] * lut[px[0]] + row[1] * lut[px[1]]) + row[2] * lut[px[2]];
    const double raw = ll_dm_min(ll_dm_max(cam / p.gains[ch], 0.0), 1.0);
    *channel = ch;
    return raw * p.scale;
}

// physics.gained: sensor DN back to a white-balanced value in [0, 1].
LL_HD double ll_phys_gained(const ll_phys_params& p, double s, int ch)
{
    return ll_dm_min(ll_dm_max((s / p.scale) * p.gains[ch], 0.0), 1.0);
}

// One mosaic site (physics.mosaic_rows + physics.gained): writes m[i] and, inside the even crop, the raw values.
LL_HD void ll_phys_site(const ll_phys_params& p, const double* lut, const unsigned char* rgb, double* m,
                        unsigned short* raw_clean, unsigned short* raw_low, long long i)
{
    const long long r = i / p.width, c = i % p.width;
    int ch;
    const double x = ll_phys_clean(p, lut, rgb, r, c, &ch);
    const double s = ll_phys_sensor(p, x, r, c);
    if (m) m[i] = ll_phys_gained(p, s, ch);
    if (raw_clean && r < p.raw_height && c < p.raw_width) {
        raw_clean[r * p.raw_width + c] = ll_phys_to_dn(p, x);
        raw_low[r * p.raw_width + c] = ll_phys_to_dn(p, s);
    }
}

// physics.mirror.
LL_HD long long ll_phys_mirror(long long i, long long n)
{
    if (i < 0) i = -i;
    if (i > n - 1) i = 2 * (n - 1) - i;
    return i < 0 ? 0 : (i > n - 1 ? n - 1 : i);
}

// The number of thresholds <= v (numpy.searchsorted(t, v, side="right")) over the 255 sorted thresholds:
// eight fixed steps (128, 64, ..., 1), each reading an index below 255, with no data-dependent branch.
LL_HD int ll_phys_code(const double* t, double v)
{
    int lo = 0;
    for (int step = 128; step > 0; step >>= 1) lo += (t[lo + step - 1] <= v) ? step : 0;
    return lo;
}

// One output pixel (physics.demosaic + physics.to_codes) at column c of row r, from the gained mosaic rows
// above (mirrored), at and below it; out points at the pixel's three bytes.
LL_HD void ll_phys_pixel_rows(const ll_phys_params& p, const double* thresholds, const double* mu,
                              const double* mc, const double* md, unsigned char* out, long long r, long long c)
{
    const long long w = p.width;
    const long long cl = ll_phys_mirror(c - 1, w), cr = ll_phys_mirror(c + 1, w);
    const double ctr = mc[c];
    const double up = mu[c], down = md[c], left = mc[cl], right = mc[cr];
    const double ul = mu[cl], ur = mu[cr], dl = md[cl], dr = md[cr];
    const double cross = ((up + down) + (left + right)) * 0.25;
    const double diag = ((ul + ur) + (dl + dr)) * 0.25;
    const double vert = (up + down) * 0.5;
    const double horiz = (left + right) * 0.5;
    const bool re = (r & 1) == 0, ce = (c & 1) == 0;
    const double red = (re && ce) ? ctr : (re ? horiz : (ce ? vert : diag));
    const double green = (re == ce) ? cross : ctr;
    const double blue = (!re && !ce) ? ctr : (!re ? horiz : (!ce ? vert : diag));
    for (int j = 0; j < 3; ++j) {
        const double* k = p.cam2rgb + 3 * j;
        const double v = ll_dm_min(ll_dm_max((k[0] * red + k[1] * green) + k[2] * blue, 0.0), 1.0);
        out[j] = (unsigned char)ll_phys_code(thresholds, v);
    }
}

// One output pixel i of the whole gained mosaic m.
LL_HD void ll_phys_pixel(const ll_phys_params& p, const double* thresholds, const double* m, unsigned char* out,
                         long long i)
{
    const long long r = i / p.width, c = i % p.width;
    const long long h = p.height, w = p.width;
    ll_phys_pixel_rows(p, thresholds, m + ll_phys_mirror(r - 1, h) * w, m + r * w, m + ll_phys_mirror(r + 1, h) * w,
                       out + 3 * i, r, c);
}

#if defined(__CUDACC__)
// Kernel 1: every mosaic site; m may be null (raw outputs only), raw_clean/raw_low may be null (image only).
extern "C" __global__ void ll_phys_mosaic_kernel(const ll_phys_params* __restrict__ params,
                                                 const double* __restrict__ lut,
                                                 const unsigned char* __restrict__ rgb, double* __restrict__ m,
                                                 unsigned short* __restrict__ raw_clean,
                                                 unsigned short* __restrict__ raw_low)
{
    const ll_phys_params p = *params;
    const long long n = p.height * p.width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        ll_phys_site(p, lut, rgb, m, raw_clean, raw_low, i);
}

// Kernel 2: every output pixel, reading kernel 1's mosaic (same stream: no synchronisation needed).
extern "C" __global__ void ll_phys_process_kernel(const ll_phys_params* __restrict__ params,
                                                  const double* __restrict__ thresholds,
                                                  const double* __restrict__ m, unsigned char* __restrict__ out)
{
    const ll_phys_params p = *params;
    const long long n = p.height * p.width;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        ll_phys_pixel(p, thresholds, m, out, i);
}
#endif
