// Deterministic float64 math: the one source of every transcendental that reaches an output byte.
//
// Built only from IEEE-754 operations that round the same way everywhere (+, -, *, /, sqrt,
// comparisons, integer operations on the bits of a float), in a fixed order, so every machine
// gets the same bits; the GPU compiles it with NVRTC and the CPU runs it from the model's
// library (native.cpp; synth/detmath.py is its Python face).  Compile WITHOUT multiply-add
// contraction (nvcc/NVRTC --fmad=false, g++ -ffp-contract=off): a fused a*b+c rounds once where
// the model rounds twice.  No standard headers (NVRTC has none): floor is done on integers,
// sqrt is the IEEE-rounded builtin.  tests/test_detmath.py pins every function's bits.
#pragma once

#ifndef LL_HD
#  if defined(__CUDACC__)
#    define LL_HD __host__ __device__ __forceinline__
#  else
#    define LL_HD inline
#  endif
#endif

#define LL_DM_SQRT2 1.4142135623730951
#define LL_DM_TWO54 18014398509481984.0
#define LL_DM_MIN_NORMAL 2.2250738585072014e-308
#define LL_DM_LN2_HI 6.93147180369123816490e-01
#define LL_DM_LN2_LO 1.90821492927058770002e-10
#define LL_DM_INVLN2 1.44269504088896338700e+00
#define LL_DM_EXP_MAX 7.09782712893383973096e+02
#define LL_DM_EXP_MIN -7.45133219101941108420e+02
#define LL_DM_INVPIO2 6.36619772367581382433e-01
#define LL_DM_PIO2_1 1.57079632673412561417e+00
#define LL_DM_PIO2_1T 6.07710050650619224932e-11
#define LL_DM_SINCOS_MAX 1048576.0
#define LL_DM_SPLITTER 134217729.0
#define LL_DM_POW_Y_MAX 1e19
#define LL_DM_ACKLAM_LOW 0.02425

LL_HD long long ll_dm_bits(double x)
{
#if defined(__CUDA_ARCH__)
    return __double_as_longlong(x);
#else
    union { double d; long long i; } u;
    u.d = x;
    return u.i;
#endif
}

LL_HD double ll_dm_from_bits(long long i)
{
#if defined(__CUDA_ARCH__)
    return __longlong_as_double(i);
#else
    union { double d; long long i; } u;
    u.i = i;
    return u.d;
#endif
}

LL_HD double ll_dm_inf() { return ll_dm_from_bits(0x7FF0000000000000LL); }
LL_HD double ll_dm_nan() { return ll_dm_from_bits(0x7FF8000000000000LL); }
LL_HD double ll_dm_min(double a, double b) { return b < a ? b : a; }  // numpy.minimum for non-nan a, b
LL_HD double ll_dm_max(double a, double b) { return b > a ? b : a; }

// floor(x): exact in IEEE arithmetic (the hardware's rounding instruction, or the C library's floor), so
// every implementation gives the same bits.
LL_HD double ll_dm_floor(double x)
{
#if defined(__CUDA_ARCH__)
    return floor(x);
#else
    return __builtin_floor(x);
#endif
}

LL_HD double ll_dm_sqrt(double x)
{
#if defined(__CUDA_ARCH__)
    return sqrt(x);  // IEEE round-to-nearest (NVRTC's default -prec-sqrt=true)
#else
    return __builtin_sqrt(x);
#endif
}

// detmath._pow2: 2.0 ** k for k in [-1022, 1023].
LL_HD double ll_dm_pow2(long long k) { return ll_dm_from_bits((k + 1023) << 52); }

LL_HD long long ll_dm_clampk(long long k) { return k < -1022 ? -1022 : (k > 1023 ? 1023 : k); }

// detmath._decompose: x = 2**k * m with m in (sqrt(2)/2, sqrt(2)], for positive finite x.
LL_HD double ll_dm_decompose(double x, long long* k_out)
{
    const int sub = x < LL_DM_MIN_NORMAL;
    const double xs = sub ? x * LL_DM_TWO54 : x;
    const long long bits = ll_dm_bits(xs);
    long long k = ((bits >> 52) & 0x7FF) - 1023 - (sub ? 54 : 0);
    double m = ll_dm_from_bits((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
    if (m > LL_DM_SQRT2) {
        m = m * 0.5;
        k = k + 1;
    }
    *k_out = k;
    return m;
}

// detmath.log for a positive finite x.
LL_HD double ll_dm_log_core(double x)
{
    const double lg1 = 6.666666666666735130e-01, lg2 = 3.999999999940941908e-01, lg3 = 2.857142874366239149e-01,
                 lg4 = 2.222219843214978396e-01, lg5 = 1.818357216161805012e-01, lg6 = 1.531383769920937332e-01,
                 lg7 = 1.479819860511658591e-01;
    long long k;
    const double m = ll_dm_decompose(x, &k);
    const double f = m - 1.0;
    const double kd = (double)(int)k;  // k in [-1075, 1024]: an int converts alike, and in vectors on AVX2
    const double s = f / (2.0 + f);
    const double z = s * s;
    const double w = z * z;
    const double t1 = w * (lg2 + w * (lg4 + w * lg6));
    const double t2 = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7)));
    const double hfsq = 0.5 * f * f;
    return kd * LL_DM_LN2_HI - ((hfsq - (s * (hfsq + (t2 + t1)) + kd * LL_DM_LN2_LO)) - f);
}

// detmath.log.
LL_HD double ll_dm_log(double x)
{
    if (x > 0 && x < ll_dm_inf()) return ll_dm_log_core(x);
    if (x == ll_dm_inf()) return x;
    return x == 0 ? -ll_dm_inf() : ll_dm_nan();
}

// detmath._two_sum and _two_prod.
LL_HD double ll_dm_two_sum(double a, double b, double* e)
{
    const double s = a + b;
    const double bb = s - a;
    *e = (a - (s - bb)) + (b - bb);
    return s;
}

LL_HD double ll_dm_two_prod(double a, double b, double* e)
{
    const double p = a * b;
    double c = LL_DM_SPLITTER * a;
    const double ah = c - (c - a);
    const double al = a - ah;
    c = LL_DM_SPLITTER * b;
    const double bh = c - (c - b);
    const double bl = b - bh;
    *e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    return p;
}

// detmath.log_ext for a positive finite x: log x = hi + *lo.
LL_HD double ll_dm_log_ext(double x, double* lo_out)
{
    // detmath.ATANH: 1 / (2 i + 3), i = 0..9
    const double a[10] = {1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0, 1.0 / 11.0,
                          1.0 / 13.0, 1.0 / 15.0, 1.0 / 17.0, 1.0 / 19.0, 1.0 / 21.0};
    long long k;
    const double m = ll_dm_decompose(x, &k);
    const double kd = (double)(int)k;  // k in [-1075, 1024]
    const double f = m - 1.0;
    double d_lo, p_lo;
    const double d = ll_dm_two_sum(2.0, f, &d_lo);
    const double s = f / d;
    const double p = ll_dm_two_prod(s, d, &p_lo);
    const double s_lo = (((f - p) - p_lo) - s * d_lo) / d;
    const double z = s * s;
    double poly = a[9];
    for (int i = 8; i >= 0; --i) poly = a[i] + z * poly;
    const double tail = s * z * poly;
    double e;
    const double hi = ll_dm_two_sum(kd * LL_DM_LN2_HI, 2.0 * s, &e);
    const double lo = e + ((kd * LL_DM_LN2_LO + 2.0 * s_lo) + 2.0 * tail);
    return ll_dm_two_sum(hi, lo, lo_out);
}

// detmath.exp for x in [EXP_MIN, EXP_MAX] (no special case to select).
LL_HD double ll_dm_exp_core(double xc)
{
    const double p1 = 1.66666666666666019037e-01, p2 = -2.77777777770155933842e-03,
                 p3 = 6.61375632143793436117e-05, p4 = -1.65339022054652515390e-06,
                 p5 = 4.13813679705723846039e-08;
    const double kd = ll_dm_floor(xc * LL_DM_INVLN2 + 0.5);
    const double hi = xc - kd * LL_DM_LN2_HI;
    const double lo = kd * LL_DM_LN2_LO;
    const double r = hi - lo;
    const double t = r * r;
    const double c = r - t * (p1 + t * (p2 + t * (p3 + t * (p4 + t * p5))));
    const double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    const long long k = (long long)(int)kd;  // kd in [-1076, 1024]
    const long long k1 = k >> 1;
    return y * ll_dm_pow2(k1) * ll_dm_pow2(k - k1);
}

// detmath.exp.
LL_HD double ll_dm_exp(double x)
{
    if (x != x) return x;
    if (x > LL_DM_EXP_MAX) return ll_dm_inf();
    if (x < LL_DM_EXP_MIN) return 0.0;
    return ll_dm_exp_core(ll_dm_min(ll_dm_max(x, -746.0), 710.0));
}

// detmath.expm1.
LL_HD double ll_dm_expm1(double x)
{
    const double q1 = -3.33333333333331316428e-02, q2 = 1.58730158725481460165e-03,
                 q3 = -7.93650757867487942473e-05, q4 = 4.00821782732936239552e-06,
                 q5 = -2.01099218183624371326e-07;
    if (x != x) return x;
    if (x > LL_DM_EXP_MAX) return ll_dm_inf();
    if (x < -40.0) return -1.0;
    const double xc = ll_dm_min(ll_dm_max(x, -40.0), 710.0);
    double kd = ll_dm_floor(xc * LL_DM_INVLN2 + 0.5);
    if ((xc < 0 ? -xc : xc) <= 0.5 * LL_DM_LN2_HI) kd = 0.0;
    const double hi = xc - kd * LL_DM_LN2_HI;
    const double lo = kd * LL_DM_LN2_LO;
    const double r = hi - lo;
    const double c = (hi - r) - lo;
    const double hfx = 0.5 * r;
    const double hxs = r * hfx;
    const double r1 = 1.0 + hxs * (q1 + hxs * (q2 + hxs * (q3 + hxs * (q4 + hxs * q5))));
    const double t = 3.0 - r1 * hfx;
    double e = hxs * ((r1 - t) / (6.0 - r * t));
    const long long k = (long long)(int)kd;  // kd in [-58, 1025]
    if (k == 0) return r - (r * e - hxs);
    e = (r * (e - c) - c) - hxs;
    if (k <= -2 || k > 56) return (1.0 - (e - r)) * ll_dm_pow2(ll_dm_clampk(k - 1)) * 2.0 - 1.0;
    if (k == -1) return 0.5 * (r - e) - 0.5;
    if (k == 1) return r < -0.25 ? -2.0 * (e - (r + 0.5)) : 1.0 + 2.0 * (r - e);
    const double two_k = ll_dm_pow2(ll_dm_clampk(k));
    if (k < 20) return ((1.0 - ll_dm_pow2(ll_dm_clampk(-k))) - (e - r)) * two_k;
    return ((r - (e + ll_dm_pow2(ll_dm_clampk(-k)))) + 1.0) * two_k;
}

// detmath.pow for x >= 0.
LL_HD double ll_dm_pow(double x, double y)
{
    if (x != x || y != y || x < 0) return ll_dm_nan();
    if (y == 0 || x == 1) return 1.0;
    if (y == 1) return x;
    if (x == 0) return y > 0 ? 0.0 : ll_dm_inf();
    if (x == ll_dm_inf()) return y > 0 ? ll_dm_inf() : 0.0;
    double lo;
    const double hi = ll_dm_log_ext(x, &lo);
    const double yc = ll_dm_min(ll_dm_max(y, -LL_DM_POW_Y_MAX), LL_DM_POW_Y_MAX);
    double e;
    const double p = ll_dm_two_prod(yc, hi, &e);
    e = e + yc * lo;
    const double r = ll_dm_exp(p);
    return r < ll_dm_inf() ? r + r * e : r;
}

// ll_dm_pow for 2**-33 <= x < 1 and |y| <= LL_DM_POW_UNIT_MAX_Y, with no branch: there |y log x| < 700, so
// none of pow's special cases can occur and exp needs no range checks (the same bits as ll_dm_pow).
#define LL_DM_POW_UNIT_MAX_Y 30.0
LL_HD double ll_dm_pow_unit(double x, double y)
{
    double lo;
    const double hi = ll_dm_log_ext(x, &lo);
    double e;
    const double p = ll_dm_two_prod(y, hi, &e);
    e = e + y * lo;
    const double r = ll_dm_exp_core(p);
    return y == 0 ? 1.0 : (y == 1 ? x : r + r * e);
}

// detmath.sincos for |x| <= SINCOS_MAX.
LL_HD void ll_dm_sincos_core(double x, double* s_out, double* c_out)
{
    const double s1 = -1.66666666666666324348e-01, s2 = 8.33333333332248946124e-03,
                 s3 = -1.98412698298579493134e-04, s4 = 2.75573137070700676789e-06,
                 s5 = -2.50507602534068634195e-08, s6 = 1.58969099521155010221e-10;
    const double c1 = 4.16666666666666019037e-02, c2 = -1.38888888888741095749e-03,
                 c3 = 2.48015872894767294178e-05, c4 = -2.75573143513906633035e-07,
                 c5 = 2.08757232129817482790e-09, c6 = -1.13596475577881948265e-11;
    const double n = ll_dm_floor(x * LL_DM_INVPIO2 + 0.5);
    const double r = (x - n * LL_DM_PIO2_1) - n * LL_DM_PIO2_1T;
    const double z = r * r;
    const double v = z * r;
    const double s = r + v * (s1 + z * (s2 + z * (s3 + z * (s4 + z * (s5 + z * s6)))));
    const double cr = z * (c1 + z * (c2 + z * (c3 + z * (c4 + z * (c5 + z * c6)))));
    const double hz = 0.5 * z;
    const double w = 1.0 - hz;
    const double c = w + (((1.0 - w) - hz) + z * cr);
    const long long q = (long long)(int)n;  // |n| <= 2**20 * 2 / pi + 1
    double sv = (q & 1) ? c : s;
    double cv = (q & 1) ? s : c;
    if (q & 2) sv = -sv;
    if ((q + 1) & 2) cv = -cv;
    *s_out = sv;
    *c_out = cv;
}

// detmath.sincos.
LL_HD void ll_dm_sincos(double x, double* s_out, double* c_out)
{
    if (!((x < 0 ? -x : x) <= LL_DM_SINCOS_MAX)) {
        *s_out = ll_dm_nan();
        *c_out = ll_dm_nan();
        return;
    }
    ll_dm_sincos_core(x, s_out, c_out);
}

// detmath.ndtri for p in (0, 1).
LL_HD double ll_dm_ndtri(double p)
{
    const double a0 = -3.969683028665376e01, a1 = 2.209460984245205e02, a2 = -2.759285104469687e02,
                 a3 = 1.383577518672690e02, a4 = -3.066479806614716e01, a5 = 2.506628277459239e00;
    const double b0 = -5.447609879822406e01, b1 = 1.615858368580409e02, b2 = -1.556989798598866e02,
                 b3 = 6.680131188771972e01, b4 = -1.328068155288572e01;
    const double c0 = -7.784894002430293e-03, c1 = -3.223964580411365e-01, c2 = -2.400758277161838e00,
                 c3 = -2.549732539343734e00, c4 = 4.374664141464968e00, c5 = 2.938163982698783e00;
    const double d0 = 7.784695709041462e-03, d1 = 3.224671290700398e-01, d2 = 2.445134137142996e00,
                 d3 = 3.754408661907416e00;
    const double q = ll_dm_min(p, 1.0 - p);
    if (q < LL_DM_ACKLAM_LOW) {
        const double t = ll_dm_sqrt(-2.0 * ll_dm_log(q));
        const double tail = (((((c0 * t + c1) * t + c2) * t + c3) * t + c4) * t + c5) /
                            ((((d0 * t + d1) * t + d2) * t + d3) * t + 1.0);
        return p < 0.5 ? tail : -tail;  // the tail formula is the lower tail; mirror it above 0.5
    }
    const double h = p - 0.5;
    const double r = h * h;
    return (((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * h /
           (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1.0);
}

// The normal approximation of a Poisson(lam) count at probability p (the huge rates of both noise models):
// floor(lam + sqrt(lam) * ndtri(p) + 1/2), at least 0.
LL_HD double ll_dm_poisson_normal(double lam, double p)
{
    return ll_dm_max(ll_dm_floor(lam + ll_dm_sqrt(lam) * ll_dm_ndtri(p) + 0.5), 0.0);
}
