// Small dense kernels shared by the compiled cores, and the BLAS sgemm they call.
//
// Hot loops are compiled twice on x86-64 (GCC/Clang function multi-versioning): for x86-64-v3
// (AVX2 + FMA) and for the baseline, chosen at load time by the CPU, so one build runs fast on
// any x86-64 machine. `omp simd` reductions (-fopenmp-simd, no OpenMP runtime) let the compiler
// vectorise sums; every rounding bound the callers use holds for any summation order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define GUARD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GUARD_CLONES
#endif

namespace guard {

constexpr double U32 = 5.9604644775390625e-08;   // 2^-24, unit roundoff of float32
constexpr double U64 = 1.1102230246251565e-16;   // 2^-53, unit roundoff of float64

// Fortran BLAS sgemm / dgemm (column-major), taken from scipy.linalg.cython_blas's capsules.
using sgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                         const float*, const float*, const int*, const float*, const int*,
                         const float*, float*, const int*);
using dgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                         const double*, const double*, const int*, const double*, const int*,
                         const double*, double*, const int*);

using sgemv_t = void (*)(const char*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);

struct Blas {
    sgemm_t sgemm = nullptr;
    sgemv_t sgemv = nullptr;
};

// C (n x m, row-major) = B (n x k, row-major) . A^T with A (m x k, row-major): one product of
// every row of B with every row of A (one query: a matrix-vector product, which reads A once
// without packing it).
inline void rows_times_rows(const Blas& blas, const float* A, int m, const float* B, int n, int k,
                            float* C) {
    if (m == 0 || n == 0) return;
    const float one = 1.0f, zero = 0.0f;
    if (n == 1 && blas.sgemv) {
        const int inc = 1;
        blas.sgemv("T", &k, &m, &one, A, &k, B, &inc, &zero, C, &inc);
        return;
    }
    const sgemm_t sgemm = blas.sgemm;
    // column-major view: C^T (m x n) = A (m x k, i.e. k x m col-major, transposed) . B^T
    sgemm("T", "N", &m, &n, &k, &one, A, &k, B, &k, &zero, C, &m);
}

inline void rows_times_rows64(dgemm_t dgemm, const double* A, int m, const double* B, int n,
                              int k, double* C) {
    if (m == 0 || n == 0) return;
    const double one = 1.0, zero = 0.0;
    dgemm("T", "N", &m, &n, &k, &one, A, &k, B, &k, &zero, C, &m);
}

// Grow v to at least n elements (geometrically: buffers reused between blocks are initialised
// once, not on every fill).
template <typename T>
inline T* room(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(std::max(n, 2 * v.size()));
    return v.data();
}

GUARD_CLONES inline double dot(const double* a, const double* b, int n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

GUARD_CLONES inline double dot_fd(const float* a, const double* b, int n) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
}

GUARD_CLONES inline float dot_ff(const float* a, const float* b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// y += a * x
GUARD_CLONES inline void axpy(double a, const double* x, double* y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

GUARD_CLONES inline void axpy_f(double a, const float* x, double* y, int n) {
#pragma omp simd
    for (int i = 0; i < n; ++i) y[i] += a * static_cast<double>(x[i]);
}

inline double norm(const double* a, int n) { return std::sqrt(dot(a, a, n)); }

// Eight running maxima: GCC does not vectorise an `omp simd reduction(max)` of std::max (it
// ran one value per instruction); the lane-wise `v > m ? v : m` (std::max's own semantics) is one
// vmaxps per eight values.
GUARD_CLONES inline float max_of(const float* v, int64_t n) {
    float m[8];
    for (int j = 0; j < 8; ++j) m[j] = -INFINITY;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
#pragma omp simd
        for (int j = 0; j < 8; ++j) m[j] = v[i + j] > m[j] ? v[i + j] : m[j];
    float r = -INFINITY;
    for (int j = 0; j < 8; ++j) r = m[j] > r ? m[j] : r;
    for (; i < n; ++i) r = v[i] > r ? v[i] : r;
    return r;
}

// Position of the lowest set bit of m (m != 0).
inline int lowest_bit(unsigned m) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(m);
#else
    int i = 0;
    for (; !(m & 1u); m >>= 1) ++i;
    return i;
#endif
}

// Positions i (< n) with v[i] >= cut, written to out (room for n); returns how many. Groups of
// 16 values are compared at once (vectorised) into a bit mask whose set bits are then listed, so
// a group costs one step per hit rather than sixteen.
GUARD_CLONES inline int64_t at_least(const float* v, int64_t n, float cut, int64_t* out) {
    int64_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        unsigned mask = 0;
#pragma omp simd reduction(| : mask)
        for (int j = 0; j < 16; ++j) mask |= static_cast<unsigned>(v[i + j] >= cut) << j;
        while (mask) {
            out[k++] = i + lowest_bit(mask);
            mask &= mask - 1;
        }
    }
    for (; i < n; ++i) out[k] = i, k += (v[i] >= cut);
    return k;
}

// Positions i (< n) with lo <= v[i] <= hi, written to out (room for n); returns how many (as
// at_least).
GUARD_CLONES inline int64_t in_band(const float* v, int64_t n, float lo, float hi, int64_t* out) {
    int64_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        unsigned mask = 0;
#pragma omp simd reduction(| : mask)
        for (int j = 0; j < 16; ++j)
            mask |= static_cast<unsigned>((v[i + j] >= lo) & (v[i + j] <= hi)) << j;
        while (mask) {
            out[k++] = i + lowest_bit(mask);
            mask &= mask - 1;
        }
    }
    for (; i < n; ++i) out[k] = i, k += (v[i] >= lo) & (v[i] <= hi);
    return k;
}

// out[r] = rows[r] . x for the n rows (n x d, row-major), four rows at a time so that each load
// of x serves four rows; the rest one at a time with `tail`. Inlined into the two entry points
// below, whose target_clones compile it once per instruction set (target_clones does not
// combine with templates, so the entry points stay plain functions).
template <typename F, typename Tail>
__attribute__((always_inline)) inline void rows_dot_body(const F* rows, int64_t n, int d,
                                                         const F* x, F* out, Tail tail) {
    int64_t r = 0;
    for (; r + 4 <= n; r += 4) {
        const F* a0 = rows + r * d;
        const F* a1 = a0 + d;
        const F* a2 = a1 + d;
        const F* a3 = a2 + d;
        F s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int k = 0; k < d; ++k) {
            s0 += a0[k] * x[k];
            s1 += a1[k] * x[k];
            s2 += a2[k] * x[k];
            s3 += a3[k] * x[k];
        }
        out[r] = s0, out[r + 1] = s1, out[r + 2] = s2, out[r + 3] = s3;
    }
    for (; r < n; ++r) out[r] = tail(rows + r * d, x, d);
}

// out[r] = rows[r] . x (float32) for the n rows (n x d, row-major).
GUARD_CLONES inline void rows_dot(const float* rows, int64_t n, int d, const float* x, float* out) {
    rows_dot_body(rows, n, d, x, out, dot_ff);
}

// out[j n + r] = rows[r] . X[j] (float32) for the n rows (n x d) and nq vectors X (nq x d): the
// rows are read from memory once for all the vectors, four rows by two vectors at a time (BLAS's
// sgemm packs the rows first, another pass over them, and at a few vectors that pass is what
// the product costs).
GUARD_CLONES inline void rows_dot_many(const float* rows, int64_t n, int d, const float* X, int nq,
                                       float* out) {
    constexpr int64_t R = 64;  // rows per group: 16 KB at d = 64, in L1 while every pair of
                               // vectors passes over it
    for (int64_t lo = 0; lo < n; lo += R) {
        const int64_t m = std::min(R, n - lo);
        int j = 0;
        for (; j + 2 <= nq; j += 2) {
            const float* x = X + static_cast<int64_t>(j) * d;
            const float* y = x + d;
            float* ox = out + static_cast<int64_t>(j) * n + lo;
            float* oy = ox + n;
            int64_t r = 0;
            for (; r + 4 <= m; r += 4) {
                const float* a0 = rows + (lo + r) * d;
                const float* a1 = a0 + d;
                const float* a2 = a1 + d;
                const float* a3 = a2 + d;
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0, t0 = 0, t1 = 0, t2 = 0, t3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, t0, t1, t2, t3)
                for (int k = 0; k < d; ++k) {
                    s0 += a0[k] * x[k];
                    s1 += a1[k] * x[k];
                    s2 += a2[k] * x[k];
                    s3 += a3[k] * x[k];
                    t0 += a0[k] * y[k];
                    t1 += a1[k] * y[k];
                    t2 += a2[k] * y[k];
                    t3 += a3[k] * y[k];
                }
                ox[r] = s0, ox[r + 1] = s1, ox[r + 2] = s2, ox[r + 3] = s3;
                oy[r] = t0, oy[r + 1] = t1, oy[r + 2] = t2, oy[r + 3] = t3;
            }
            for (; r < m; ++r) {
                ox[r] = dot_ff(rows + (lo + r) * d, x, d);
                oy[r] = dot_ff(rows + (lo + r) * d, y, d);
            }
        }
        if (j < nq)
            rows_dot_body(rows + lo * d, m, d, X + static_cast<int64_t>(j) * d, out + static_cast<int64_t>(j) * n + lo, dot_ff);
    }
}

// rows_times_rows for the scans of the training rows: a few vectors by rows_dot_many, more by
// BLAS.
inline void scan_rows_times(const Blas& blas, const float* A, int m, const float* B, int n, int k,
                            float* C) {
    if (n >= 2 && n <= 4) {
        rows_dot_many(A, m, k, B, n, C);
        return;
    }
    rows_times_rows(blas, A, m, B, n, k, C);
}

// V[j] *= s[j] for the n values V, in float32.
GUARD_CLONES inline void scale_by(float* V, const float* s, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) V[j] = V[j] * s[j];
}

// h = M x (d) for a d x d matrix M given by its transpose Mt (row-major): h_r = sum_k Mt[k][r]
// x_k, summed over k in ascending order (each step a vector update: no reduction to reorder).
GUARD_CLONES inline void map_vec(const double* Mt, const double* x, int d, double* h) {
    for (int r = 0; r < d; ++r) h[r] = 0.0;
    for (int k = 0; k < d; ++k) {
        const double xk = x[k];
        const double* m = Mt + static_cast<int64_t>(k) * d;
#pragma omp simd
        for (int r = 0; r < d; ++r) h[r] += xk * m[r];
    }
}

// One row fl32(w) of a view of the training rows (guard/geometry/hull_view.py): w = y / |y|
// with y = t A (A: d x d, row-major, float64; each y_j summed over k in ascending order) or
// y = t (A = nullptr), the norm taken of y / max_j |y_j| (no underflow, as
// guard.geometry.sphere.to_sphere); the zero vector for y = 0. y: scratch (d). The one place
// that computes a view's rows: the compiled core on demand, HullView.rows() for all of them.
GUARD_CLONES inline void view_row(const float* t, const double* A, int d, double* y, float* out) {
    if (A) {
        // W columns per pass over A: their sums stay in registers (16 measured 1.6x faster
        // than 32 at d = 64, which spills)
#define GUARD_VIEW_COLS(W)                                                         \
    for (; j0 + (W) <= d; j0 += (W)) {                                             \
        double acc[W] = {};                                                        \
        for (int k = 0; k < d; ++k) {                                              \
            const double tk = static_cast<double>(t[k]);                           \
            const double* a = A + static_cast<int64_t>(k) * d + j0;                \
            _Pragma("omp simd") for (int j = 0; j < (W); ++j) acc[j] += tk * a[j]; \
        }                                                                          \
        for (int j = 0; j < (W); ++j) y[j0 + j] = acc[j];                          \
    }
        int j0 = 0;
        GUARD_VIEW_COLS(16)
        GUARD_VIEW_COLS(4)
#undef GUARD_VIEW_COLS
        if (j0 < d) {
            for (int j = j0; j < d; ++j) y[j] = 0.0;
            for (int k = 0; k < d; ++k) {
                const double tk = static_cast<double>(t[k]);
                const double* a = A + static_cast<int64_t>(k) * d;
                for (int j = j0; j < d; ++j) y[j] += tk * a[j];
            }
        }
    } else {
        for (int j = 0; j < d; ++j) y[j] = static_cast<double>(t[j]);
    }
    double big = 0.0;  // (a maximum: the same in any order)
#pragma omp simd reduction(max : big)
    for (int j = 0; j < d; ++j) big = std::max(big, std::abs(y[j]));
    if (!(big > 0.0)) {
        for (int j = 0; j < d; ++j) out[j] = 0.0f;
        return;
    }
#pragma omp simd
    for (int j = 0; j < d; ++j) y[j] /= big;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;  // four sums in a fixed order
    int j = 0;
    for (; j + 4 <= d; j += 4) {
        s0 += y[j] * y[j];
        s1 += y[j + 1] * y[j + 1];
        s2 += y[j + 2] * y[j + 2];
        s3 += y[j + 3] * y[j + 3];
    }
    for (; j < d; ++j) s0 += y[j] * y[j];
    const double n = std::sqrt((s0 + s1) + (s2 + s3));
#pragma omp simd
    for (int i = 0; i < d; ++i) out[i] = static_cast<float>(y[i] / n);
}

// out (n x d) = the rows idx (n) of T (row-major, d columns).
inline void gather_rows(const float* T, const int64_t* idx, int64_t n, int d, float* out) {
    for (int64_t j = 0; j < n; ++j) std::memcpy(out + j * d, T + idx[j] * d, sizeof(float) * d);
}

// out[r] = P[r] . x (float64) for the m rows of P (m x d, row-major).
GUARD_CLONES inline void rows_dot64(const double* P, int m, int d, const double* x, double* out) {
    rows_dot_body(P, static_cast<int64_t>(m), d, x, out, dot);
}

// Indices of the m largest entries of v (n), unordered; fewer when fewer exceed `floor`.
// A cut estimated on a strided sample spares a partition of all of v (as
// guard.geometry.hull._top_indices).
inline void top_indices(const float* v, int64_t n, int64_t m, std::vector<int64_t>& idx,
                        double floor = -INFINITY) {
    idx.clear();
    if (m <= 0 || n == 0) return;
    if (n <= 4 * m) {
        for (int64_t i = 0; i < n; ++i)
            if (v[i] > floor) idx.push_back(i);
    } else {
        const int64_t step = std::max<int64_t>(1, m / 16);
        std::vector<float> s;
        s.reserve(n / step + 1);
        for (int64_t i = 0; i < n; i += step) s.push_back(v[i]);
        const int64_t ns = static_cast<int64_t>(s.size());
        int64_t r = std::max<int64_t>(1, (m * ns) / n);
        while (true) {
            std::vector<float> w(s);
            std::nth_element(w.begin(), w.begin() + (ns - r), w.end());
            const float cut = w[ns - r];
            // branch-free collection: write every index, advance past the kept ones
            idx.resize(n);
            int64_t k = 0;
            if (cut > floor) {
                for (int64_t i = 0; i < n; ++i) idx[k] = i, k += (v[i] >= cut);
            } else {
                for (int64_t i = 0; i < n; ++i) idx[k] = i, k += (v[i] > floor);
            }
            idx.resize(k);
            if (static_cast<int64_t>(idx.size()) >= m || r >= ns || !(cut > floor)) break;
            r = std::min(ns, 4 * r);  // unlucky sample: lower the cut
        }
    }
    if (static_cast<int64_t>(idx.size()) > m) {
        std::nth_element(idx.begin(), idx.begin() + m, idx.end(),
                         [v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
        idx.resize(m);
    }
}

}  // namespace guard
