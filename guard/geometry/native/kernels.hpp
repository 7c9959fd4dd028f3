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

GUARD_CLONES inline float max_of(const float* v, int64_t n) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; ++i) m = std::max(m, v[i]);
    return m;
}

// Positions i (< n) with v[i] >= cut, written to out (room for n); returns how many. Groups of
// 16 values are tested at once (vectorised), so a sparse hit pattern costs little more than
// reading v.
GUARD_CLONES inline int64_t at_least(const float* v, int64_t n, float cut, int64_t* out) {
    int64_t k = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        int any = 0;
#pragma omp simd reduction(| : any)
        for (int j = 0; j < 16; ++j) any |= (v[i + j] >= cut);
        if (any)
            for (int j = 0; j < 16; ++j) out[k] = i + j, k += (v[i + j] >= cut);
    }
    for (; i < n; ++i) out[k] = i, k += (v[i] >= cut);
    return k;
}

// out[r] = rows[r] . x (float32) for the n rows (n x d, row-major).
GUARD_CLONES inline void rows_dot(const float* rows, int64_t n, int d, const float* x, float* out) {
    for (int64_t r = 0; r < n; ++r) {
        const float* a = rows + r * d;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < d; ++k) s += a[k] * x[k];
        out[r] = s;
    }
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
