// Hull blocks in one set of passes over the training points T: the raw hull of T, the
// spherical hull of their directions fl32(t / |t|) (guard.detectors.sphere) and hulls of the
// directions of linear maps of them, fl32(t A / |t A|) (guard.detectors.whitened). They all
// scan the same memory: a full round of the spherical hull needs g.t^ for every training point,
// and fl32(fl32(g.t) s_t) with s_t = fl32(1 / |t|) is that product up to a rounding bound that
// the block's certificate takes in; through a map A the product is fl32(fl32((A g).t) s_t),
// s_t = fl32(1 / |t A|) (a view's block: ViewMap in hull_core.hpp). So each pass reads
// T once for the open queries of every hull (one GEMM per block of rows), where separate
// queries read one N x d array each: at small batches the scan is bound by memory traffic, and
// the rounds of the hulls run in lock step.
#pragma once

#include <atomic>
#include <exception>
#include <thread>
#include <utility>

#include "hull_core.hpp"
#include "union_core.hpp"

namespace guard {

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

// Runs f(k, i, p) for every view k < K and i < count(k) on thread p (0 or 1): each thread
// first the units of its views (k of its parity), then those of the other's left; with one
// thread, all of them on part 0.
template <typename C, typename F>
inline void spread(bool two, int K, C&& count, F&& f) {
    std::vector<std::pair<int, int>> units[2];
    for (int k = 0; k < K; ++k)
        for (int i = 0, n = count(k); i < n; ++i) units[k % 2].emplace_back(k, i);
    if (units[0].empty() && units[1].empty()) return;
    std::atomic<size_t> taken[2] = {0, 0};
    both(two && units[0].size() + units[1].size() > 1, [&](int p) {
        for (int from : {p, 1 - p})
            for (size_t u; (u = taken[from].fetch_add(1)) < units[from].size();)
                f(units[from][u].first, units[from][u].second, p);
    });
}

// One hull of a shared scan: its block (T's own rows, or a view of them: its scan directions
// are scan_dirs(), the scale of its products scan_scale()) and its queries (B x d, in the
// block's own space).
struct ScanView {
    HullBlock* block;
    const double* Q;
};

// The views' blocks over the same rows T (N x d), answered as by their own run(), for any
// number of threads (1 or 2): with two, the per-query work (the first working sets; in each
// round the certificates of the last scan, the inner rounds and the next pool cuts: HullBlock's
// units, whose answers do not depend on the thread that runs them) goes to both threads
// (spread: each first its own views' units, those of even index on this thread, then what is
// left of the other's: with three views, as the default score has, a fixed split by view left
// one thread idle a third of the time), and each scan one half of the rows per thread (the
// halves meet at a block boundary, so every product is the one a single thread computes, and
// HullBlock::finish_query merges them into the streams of one pass).
//
// With `un` (the union of learned regions over the same rows T, queries Qu: B x d float32) the
// union's products ride on the first pass, as extra rows of its GEMM, and its answers go to
// `uout` (as UnionScan::run gives them).
inline void run_views(const std::vector<ScanView>& views, int B, const float* T, int64_t N, int d,
                      const Blas& blas, int threads, std::vector<float> (&bufs)[2], HullTimes& tm,
                      UnionScan* un = nullptr, const float* Qu = nullptr, UnionOut* uout = nullptr) {
    const bool two = threads > 1;
    const int K = static_cast<int>(views.size());
    both(two, [&](int p) {
        for (int k = p; k < K; k += 2) views[k].block->begin_products(views[k].Q, B);
    });
    spread(two, K, [&](int) { return B; },
           [&](int k, int b, int p) { views[k].block->start_query(b, p); });
    std::vector<int> n_open(K, 0);
    std::vector<char> on(K, 1);
    bool union_due = un != nullptr;  // the union scans with the first pass
    if (union_due) un->begin(Qu, B);
    std::vector<float> G;
    std::vector<int64_t> at(K + 1);  // first row of each view's directions in G
    while (true) {
        // the round's per-query steps (certificates of the last scan, inner rounds, pool cuts)
        // go to both threads, each first those of its own views, then what is left of the
        // other's
        spread(two, K, [&](int k) { return n_open[k] > 0 ? views[k].block->n_todo() : 0; },
               [&](int k, int i, int p) { views[k].block->finish_query(i, p); });
        for (int k = 0; k < K; ++k) {
            if (n_open[k] > 0) views[k].block->after_finish();
            if (on[k]) views[k].block->open_round();
        }
        spread(two, K, [&](int k) { return on[k] ? views[k].block->n_inner() : 0; },
               [&](int k, int i, int p) { views[k].block->inner(i, p); });
        both(two, [&](int p) {
            for (int k = p; k < K; k += 2) {
                n_open[k] = on[k] ? static_cast<int>(views[k].block->close_round().size()) : 0;
                on[k] = n_open[k] > 0;
            }
        });
        spread(two, K, [&](int k) { return n_open[k]; },
               [&](int k, int i, int p) { views[k].block->ready_query(i, p); });
        const int nu = union_due ? B : 0;
        at[0] = 0;
        for (int k = 0; k < K; ++k) at[k + 1] = at[k] + n_open[k];
        const int nh = static_cast<int>(at[K]);
        if (nh + nu == 0) break;
        const int nb = nh + nu;
        G.resize(static_cast<size_t>(nb) * d);
        for (int k = 0; k < K; ++k)
            if (n_open[k])
                std::copy(views[k].block->scan_dirs(), views[k].block->scan_dirs() + static_cast<size_t>(n_open[k]) * d,
                          G.begin() + at[k] * d);
        if (nu) std::copy(Qu, Qu + static_cast<size_t>(nu) * d, G.begin() + static_cast<size_t>(nh) * d);
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
                for (int k = 0; k < K; ++k) {
                    if (!n_open[k]) continue;
                    float* Vk = V + at[k] * n;
                    if (const float* sc = views[k].block->scan_scale())
                        for (int i = 0; i < n_open[k]; ++i) scale_by(Vk + static_cast<int64_t>(i) * n, sc + lo, n);
                    views[k].block->scan_block(Vk, lo, n, p);
                }
                if (nu) un->scan_block(V + static_cast<int64_t>(nh) * n, n, lo, p);
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
