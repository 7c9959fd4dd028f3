// Two hull blocks in one set of passes: the raw hull of the training points T and the spherical
// hull of their directions fl32(t / |t|) (guard.detectors.sphere). Both scan the same memory: a
// full round of the spherical hull needs g.t^ for every training point, and
// fl32(fl32(g.t) s_t) with s_t = fl32(1 / |t|) is that product up to a rounding bound that the
// spherical block's certificate takes in (HullBlock::set_scaled_scan). So each pass reads T
// once for the open queries of both hulls (one GEMM per block of rows), where two separate
// queries read two N x d arrays: at small batches the scan is bound by memory traffic, and the
// rounds of the two hulls run in lock step.
#pragma once

#include <exception>
#include <thread>

#include "hull_core.hpp"
#include "union_core.hpp"

namespace guard {

// Scales the products V (n values) by s (n values), in float32.
GUARD_CLONES inline void scale_by(float* V, const float* s, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) V[j] = V[j] * s[j];
}

// Runs f(0) on this thread and, with two threads, f(1) on a second one; rethrows the first
// error once both ended.
template <typename F>
inline void both(bool two, F&& f) {
    if (!two) {
        f(0);
        f(1);
        return;
    }
    std::exception_ptr err;
    std::thread other([&] {
        try {
            f(1);
        } catch (...) {
            err = std::current_exception();
        }
    });
    try {
        f(0);
    } catch (...) {
        other.join();
        throw;
    }
    other.join();
    if (err) std::rethrow_exception(err);
}

// raw: the block over T (N x d); sphere: the block over the directions, whose scan reads T and
// multiplies by scale (N). Both are answered as by their own run(), for any number of threads
// (1 or 2): with two, each round's inner work runs one block per thread, and each scan one
// half of the rows per thread (the halves meet at a block boundary, so every product is the
// one a single thread computes, and HullBlock::merge_parts gives the streams of one pass).
//
// With `un` (the union of learned regions over the same rows T, queries Qu: B x d float32) the
// union's products ride on the first pass, as extra rows of its GEMM, and its answers go to
// `uout` (as UnionScan::run gives them).
inline void run_pair(HullBlock& raw, const double* Q, HullBlock& sphere, const double* Qs, int B,
                     const float* T, const float* scale, int64_t N, int d, const Blas& blas,
                     int threads, std::vector<float> (&bufs)[2], HullTimes& tm,
                     UnionScan* un = nullptr, const float* Qu = nullptr, UnionOut* uout = nullptr) {
    const bool two = threads > 1;
    HullBlock* blk[2] = {&raw, &sphere};
    sphere.set_scaled_scan(true);
    both(two, [&](int p) { blk[p]->begin(p == 0 ? Q : Qs, B); });
    int n_open[2] = {0, 0};
    bool on[2] = {true, true};
    bool union_due = un != nullptr;  // the union scans with the first pass
    if (union_due) un->begin(Qu, B);
    std::vector<float> G;
    while (true) {
        both(two, [&](int p) {
            if (n_open[p] > 0) blk[p]->end_round();
            n_open[p] = on[p] ? static_cast<int>(blk[p]->next_round().size()) : 0;
            on[p] = n_open[p] > 0;
        });
        const int na = n_open[0], ns = n_open[1], nu = union_due ? B : 0;
        if (na + ns + nu == 0) break;
        const int nb = na + ns + nu;
        G.resize(static_cast<size_t>(nb) * d);
        if (na) std::copy(raw.G32(), raw.G32() + static_cast<size_t>(na) * d, G.begin());
        if (ns) std::copy(sphere.G32(), sphere.G32() + static_cast<size_t>(ns) * d, G.begin() + static_cast<size_t>(na) * d);
        if (nu) std::copy(Qu, Qu + static_cast<size_t>(nu) * d, G.begin() + static_cast<size_t>(na + ns) * d);
        const int64_t BL = HullBlock::scan_rows(nb, d);
        const int64_t n_blocks = (N + BL - 1) / BL;
        const int64_t mid = two ? std::min(N, BL * ((n_blocks + 1) / 2)) : N;
        Tic t;
        both(two, [&](int p) {
            const int64_t from = p == 0 ? 0 : mid, to = p == 0 ? mid : N;
            if (from >= to) return;
            float* V = room(bufs[p], static_cast<size_t>(nb) * BL);
            for (int64_t lo = from; lo < to; lo += BL) {
                const int64_t n = std::min(BL, to - lo);
                scan_rows_times(blas, T + lo * d, static_cast<int>(n), G.data(), nb, d, V);
                if (na) raw.scan_block(V, lo, n, p);
                if (ns) {
                    float* Vs = V + static_cast<int64_t>(na) * n;
                    for (int i = 0; i < ns; ++i) scale_by(Vs + static_cast<int64_t>(i) * n, scale + lo, n);
                    sphere.scan_block(Vs, lo, n, p);
                }
                if (nu) un->scan_block(V + static_cast<int64_t>(na + ns) * n, n, lo, p);
            }
        });
        tm.scan_gemm += t.lap();  // (products and streams together)
        if (nu) {
            un->end(*uout, 0);
            union_due = false;
        }
    }
}

}  // namespace guard
