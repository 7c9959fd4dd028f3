// Column generation of the certified hull distance for a block of queries (the compiled twin of
// guard.geometry.hull's numpy path; the algorithm and its certificate are described there).
//
// Per query: inner rounds (Wolfe's QP on the working set, violators from a pool) need no
// certificate; a full round bounds max_t g.t over all N training points from one float32
// product per point (a BLAS GEMM serving every open query of the block at once, or the caller's
// scan, e.g. on a GPU), re-evaluating in float64 every point whose float32 value could be the
// maximum. Queries drop out of the block's GEMMs as they converge.
#pragma once

#include <chrono>
#include <functional>
#include <numeric>

#include "kernels.hpp"
#include "wolfe.hpp"

namespace guard {

// Seconds spent per phase (accumulated over calls; read by the benchmarks).
struct HullTimes {
    double start = 0, qp = 0, pool = 0, sub_gemm = 0, scan_gemm = 0, scan_stream = 0, finish = 0;
};

struct Tic {
    std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
    double lap() {
        const auto n = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(n - t).count();
        t = n;
        return s;
    }
};

struct HullParams {
    int k0 = 16;            // first working set: nearest points of the subsample
    double tol = 1e-3;      // relative gap
    double atol = 1e-7;     // absolute distance counted as inside (already scaled)
    double max_norm = 0;    // largest training-point norm
    int max_rounds = 100;   // full rounds per query
    int add_per_round = 64;
    int pool_size = 1024;
    int max_working = 256;
    int max_inner = 50;
    double time_budget_s = -1;  // <= 0: none
};

struct HullQuery {
    std::vector<double> q;      // d
    std::vector<int64_t> ws;    // training indices of the working set
    std::vector<float> R;       // their rows (m x d, float32)
    std::vector<double> P;      // ws points - q (m x d), float64
    std::vector<double> Pn;     // their squared norms
    Wolfe qp;
    bool pool_is_sub = true;
    std::vector<int64_t> pool;  // training indices (when not the subsample), ascending
    std::vector<double> p, g;   // hull point, q - p
    double up = INFINITY, lower = 0.0;
    int n_qp = 0, rounds = 0;
    int64_t evals = 0;
    bool converged = false, finished = false, inner_done = false;
};

struct HullStream {
    double err = 0;                  // rounding bound of a float32 product
    float top = -INFINITY;           // running float32 maximum
    float cut = -INFINITY;           // candidates' cut for the running maximum
    std::vector<int64_t> cand;       // indices that reached `cut` when seen
    std::vector<float> cand_v;       // their values
    float pool_cut = -INFINITY;      // estimated value of the pool_size-th largest
    int64_t n_pool = 0;              // points above pool_cut so far:
    std::vector<int64_t> pool;       // their indices, ascending (first n_pool entries)
    std::vector<float> pool_v;       // their values
};

// Scratch of the per-query steps of a round (inner rounds, certificate), one per thread that
// runs them (run_views hands them to both threads).
struct InnerScratch {
    std::vector<uint8_t> mark;           // N: membership in a working set (all 0 between uses)
    std::vector<float> pool32;           // one query's pool rows
    std::vector<float> pool_v;           // their products
    std::vector<float> pscale;           // their scale (a view's s_t)
    std::vector<float> row;              // one view row (d)
    std::vector<double> y;               // scratch of view_row, dir32 (d)
    std::vector<float> g32;              // one direction (d)
    std::vector<int> fresh;              // scratch of add()
    std::vector<int64_t> idx;            // violators: training indices,
    std::vector<float> vals;             // their values
    std::vector<const float*> src;       // and their rows in cache
    std::vector<int> order;              // scratch of a query's next pool
    std::vector<int64_t> sel;            // scratch of a query's first working set
    std::vector<float> V;                // products of a group's directions with the subsample
    double start = 0, qp = 0, pool = 0, sub = 0, finish = 0;  // seconds, folded into HullTimes
};

// Scratch memory reused between blocks (first-touch page faults of a fresh B x N buffer per
// block cost as much as the scan).
struct HullWorkspace {
    std::vector<float> buf;     // B x N: a full round's products
    std::vector<float> sub;     // B x S: products with the subsample
    InnerScratch inner[2];      // per thread of the inner rounds
    std::vector<HullQuery> qs;  // per-query states (their buffers keep their capacity)
    std::vector<HullStream> streams;   // per query of a round (a scan's first part)
    std::vector<HullStream> streams2;  // the same, a scan's second part (run_views' threads)
    HullTimes times;
};

// A block whose rows are a view of the training rows T (guard/geometry/hull_view.py): row t is
// fl32(w_t), w_t = t A / |t A| (A: d x d float64, row-major; nullptr: t / |t|), computed on
// demand by view_row (kernels.hpp) where a row itself is needed (a working set, a candidate of
// the certificate), never stored for all N. Products with many rows come from T: g.w_t is
// ((A g).t) s_t with scale s_t = fl32(1 / |t A|) (0 for a zero row); kappa >= max_t |t| / |t A|
// and a_fro >= the Frobenius norm of A enter the certificate's rounding bound (prepare_round).
struct ViewMap {
    const double* A = nullptr;
    const double* At = nullptr;    // A's transpose (d x d, row-major), with A
    const float* scale = nullptr;  // N
    double kappa = 1.0, a_fro = 0.0;
};

// The whole block. T: N x d float32 training points; sub (S) indices of the subsample and its
// rows sub32 (S x d) with squared norms sub_sq. With a ViewMap (`map`) the block's rows are the
// view's and T, sub32 the training rows it is a view of (sub_sq unused).
class HullBlock {
  public:
    using Scan = std::function<void(const float* G, int B, float* V)>;  // V (B x N) = G T^T

    HullBlock(const float* T, int64_t N, int d, const int64_t* sub, const float* sub32,
              const float* sub_sq, int64_t S, const HullParams& prm, const Blas& sgemm, Scan scan,
              HullWorkspace& ws, const ViewMap* map = nullptr)
        : qs(ws.qs), T_(T), N_(N), d_(d), sub_(sub), sub32_(sub32), sub_sq_(sub_sq), S_(S), prm_(prm),
          sgemm_(sgemm), scan_(std::move(scan)), w_(ws.inner), buf_(ws.buf), V_(ws.sub), streams_(ws.streams), streams2_(ws.streams2), tm_(ws.times) {
        for (InnerScratch& w : ws.inner) {
            w.mark.assign(N, 0);
            w.row.resize(d);
            w.y.resize(d);
            w.g32.resize(d);
        }
        if (map) {
            if (scan_) throw std::invalid_argument("a view's block scans the CPU's rows only");
            view_ = true;
            A_ = map->A;
            At_ = map->At;
            if (A_ && !At_) throw std::invalid_argument("a view's map needs its transpose");
            dscale_ = map->scale;
            kappa_ = map->kappa;
            a_fro_ = map->a_fro;
            sub_scale_.resize(S);
            for (int64_t s = 0; s < S; ++s) sub_scale_[s] = dscale_[sub[s]];
            x64_.resize(d);
        }
    }

    std::vector<HullQuery>& qs;

    // One block on its own: rounds until every query is finished, each full round scanning T.
    void run(const double* Q, int B) {
        begin(Q, B);
        while (!next_round().empty()) {
            const int nb = static_cast<int>(todo_.size());
            Tic t3;
            if (scan_) {  // the caller's scan (e.g. on a GPU): all products at once, then streamed
                if (buf_.size() < static_cast<size_t>(nb) * N_) buf_.resize(static_cast<size_t>(nb) * N_);
                scan_(G32_.data(), nb, buf_.data());
                constexpr int64_t BL = 4096;
                for (int64_t lo = 0; lo < N_; lo += BL) {
                    const int64_t n = std::min(BL, N_ - lo);
                    for (int i = 0; i < nb; ++i)
                        stream_block(streams_[i], buf_.data() + static_cast<int64_t>(i) * N_ + lo, lo, n, hits_[0]);
                }
            } else {
                // blocks of rows (scan_rows)
                const int64_t BL = scan_rows(nb, d_);
                if (buf_.size() < static_cast<size_t>(nb) * BL) buf_.resize(static_cast<size_t>(nb) * BL);
                for (int64_t lo = 0; lo < N_; lo += BL) {
                    const int64_t n = std::min(BL, N_ - lo);
                    scan_rows_times(sgemm_, T_ + lo * d_, static_cast<int>(n), scan_dirs(), nb, d_, buf_.data());
                    if (view_)
                        for (int i = 0; i < nb; ++i) scale_by(buf_.data() + static_cast<int64_t>(i) * n, dscale_ + lo, n);
                    tm_.scan_gemm += t3.lap();
                    scan_block(buf_.data(), lo, n);
                    tm_.scan_stream += t3.lap();
                }
            }
            tm_.scan_stream += t3.lap();
            end_round();
        }
    }

    // ------------------------------------------------------------ the rounds, step by step
    // begin(); then while next_round() is not empty: scan_block() over every block of the N
    // training rows in order (products of the rows with the float32 directions scan_dirs() of
    // the queries in the round), end_round(). run() does this with its own scan; run_views()
    // in hull_pair.hpp drives several blocks that share one scan.

    // Rows per scan block for nb open queries: their products fit in ~256 KB, and the rows in
    // ~1 MB (measured at 1-4 queries: 4,096 rows of 64 floats cost 1.1-1.7x less than 65,536, on
    // one thread and on two, whose halves of a pass then hold several blocks each).
    static int64_t scan_rows(int nb, int d) {
        const int64_t cap = std::max<int64_t>(512, (int64_t{1} << 18) / d);
        return std::min(cap, std::max<int64_t>(512, (int64_t{1} << 16) / nb));
    }

    void begin(const double* Q, int B) {
        begin_products(Q, B);
        for (int b = 0; b < B; ++b) start_query(b, 0);
    }

    // begin() in two steps, so that run_views can hand the queries to two threads:
    // begin_products() (the queries' products with the subsample: one GEMM), then
    // start_query(b, part) for every query b < B, each on any thread with its own part (the
    // same answer either way): its first working set, the k0 nearest points of the subsample.
    void begin_products(const double* Q, int B) {
        start_ = std::chrono::steady_clock::now();
        Tic tic;
        if (static_cast<int>(qs.size()) < B) qs.resize(B);
        Q_ = Q;
        std::vector<float> Q32(static_cast<size_t>(B) * d_);
        for (int b = 0; b < B; ++b) dir32(w_[0], Q + static_cast<int64_t>(b) * d_, Q32.data() + static_cast<int64_t>(b) * d_);
        if (V_.size() < static_cast<size_t>(B) * S_) V_.resize(static_cast<size_t>(B) * S_);
        rows_times_rows(sgemm_, sub32_, static_cast<int>(S_), Q32.data(), B, d_, V_.data());
        tm_.start += tic.lap();
        active_.resize(B);
        std::iota(active_.begin(), active_.end(), 0);
        n_full_ = 0;
        todo_.clear();
    }
    void start_query(int b, int part) {
        InnerScratch& w = w_[part];
        Tic tic;
        HullQuery& st = qs[b];
        st.ws.clear();
        st.R.clear();
        st.P.clear();
        st.Pn.clear();
        st.pool.clear();
        st.pool_is_sub = true;
        st.up = INFINITY;
        st.lower = 0.0;
        st.n_qp = st.rounds = 0;
        st.evals = 0;
        st.converged = st.finished = st.inner_done = false;
        st.q.assign(Q_ + static_cast<int64_t>(b) * d_, Q_ + static_cast<int64_t>(b + 1) * d_);
        st.qp.reset(d_);
        float* col = V_.data() + static_cast<int64_t>(b) * S_;
        if (view_) {  // |row|^2 = 1 (0 for a zero row), products scaled by s_t
            for (int64_t s = 0; s < S_; ++s)
                col[s] = (sub_scale_[s] > 0.0f ? 1.0f : 0.0f) - 2.0f * (col[s] * sub_scale_[s]);
        } else {
            for (int64_t s = 0; s < S_; ++s) col[s] = sub_sq_[s] - 2.0f * col[s];
        }
        const int k0 = static_cast<int>(std::min<int64_t>(prm_.k0, S_));
        std::vector<int64_t>& order = w.sel;
        order.resize(S_);
        std::iota(order.begin(), order.end(), 0);
        if (k0 < S_)
            std::nth_element(order.begin(), order.begin() + k0, order.end(),
                             [col](int64_t x, int64_t y) { return col[x] < col[y] || (col[x] == col[y] && x < y); });
        std::sort(order.begin(), order.begin() + k0);
        for (int i = 0; i < k0; ++i) append(st, sub_[order[i]], own(w, sub32_ + order[i] * d_));
        w.start += tic.lap();
    }

    // The inner rounds of the open queries, then those that need a full round (empty: the block
    // is finished); their directions are G32(), their streams are ready for scan_block().
    const std::vector<int>& next_round() {
        open_round();
        for (int i = 0; i < n_inner(); ++i) inner(i, 0);
        close_round();
        for (int i = 0; i < n_todo(); ++i) ready_query(i, 0);
        return todo_;
    }

    // next_round() in steps, so that run_views can hand the inner rounds to two threads:
    // open_round(); inner(i, part) for every i < n_inner(), each on any thread with its own
    // part (0 or 1; the same answer either way); then close_round() (next_round()'s answer)
    // and ready_query(i, part) for every i < n_todo() (its streams, and its pool cut from the
    // products with the subsample that close_round() computed).
    // The units are the queries still on the shared subsample, in two fixed groups whatever
    // the threads (each group's rounds in lock step: one GEMM per step), then one per query
    // with a pool of its own.
    void open_round() {
        todo_.clear();
        own_.clear();
        subq_.clear();
        if (active_.empty()) return;
        ++n_full_;
        for (int a : active_) {
            qs[a].inner_done = false;
            (qs[a].pool_is_sub ? subq_ : own_).push_back(a);
        }
    }
    int n_inner() const { return n_groups() + static_cast<int>(own_.size()); }
    void inner(int i, int part) {
        const int ng = n_groups();
        if (i >= ng) return inner_own(w_[part], qs[own_[i - ng]]);
        const size_t half = (subq_.size() + 1) / 2;
        inner_sub(w_[part], std::vector<int>(i == 0 ? subq_.begin() : subq_.begin() + half,
                                             i == 0 ? subq_.begin() + half : subq_.end()));
    }
    const std::vector<int>& close_round() {
        fold_times();
        if (active_.empty()) return todo_;
        oob_ = n_full_ >= prm_.max_rounds;
        if (prm_.time_budget_s > 0) {
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
            oob_ = oob_ || el > prm_.time_budget_s;
        }
        for (int a : active_) {
            HullQuery& st = qs[a];
            if (st.up <= prm_.atol) {  // inside the hull: no full round needed
                finish(st, 0.0, n_full_ - 1, true);
            } else {
                todo_.push_back(a);
            }
        }
        active_.clear();
        if (!todo_.empty()) prepare_round();
        return todo_;
    }

    const float* G32() const { return G32_.data(); }

    // The products V (todo x n, row i for todo[i]) of training rows lo..lo+n-1. A scan may
    // come in two parts (part 0 and 1, e.g. on two threads: the parts' rows must not interleave,
    // and part 0 holds the lower rows); end_round() merges them.
    void scan_block(const float* V, int64_t lo, int64_t n, int part = 0) {
        const int nb = static_cast<int>(todo_.size());
        std::vector<HullStream>& ss = part == 0 ? streams_ : streams2_;
        for (int i = 0; i < nb; ++i) stream_block(ss[i], V + static_cast<int64_t>(i) * n, lo, n, hits_[part]);
    }

    void end_round() {
        for (int i = 0; i < n_todo(); ++i) finish_query(i, 0);
        after_finish();
    }

    // end_round() in steps, as next_round(): finish_query(i, part) for every i < n_todo() (any
    // thread, each with its own part), then after_finish().
    int n_todo() const { return static_cast<int>(todo_.size()); }
    void after_finish() {
        fold_times();
        for (int a : todo_)
            if (!qs[a].finished) active_.push_back(a);
        todo_.clear();
    }

    // The i-th query's streams ready for a scan, with its pool cut (next_round()).
    void ready_query(int i, int part) {
        Tic tic;
        HullStream& s = streams_[i];
        s.top = s.cut = -INFINITY;
        s.cand.clear();
        s.cand_v.clear();
        s.n_pool = 0;
        // pool cut from the subsample, a uniform random sample of the points (the whole set
        // when small): its r-th largest value estimates the pool_size-th largest (the products
        // are scratch: partitioned in place)
        const int64_t r = std::max<int64_t>(1, (static_cast<int64_t>(prm_.pool_size) * S_) / N_);
        if (prm_.pool_size >= N_ || r > S_) {
            s.pool_cut = -INFINITY;
        } else {
            float* v = V_.data() + static_cast<int64_t>(i) * S_;
            std::nth_element(v, v + (S_ - r), v + S_);
            s.pool_cut = v[S_ - r];
        }
        HullStream& s2 = streams2_[i];
        s2.err = s.err;
        s2.pool_cut = s.pool_cut;
        s2.top = s2.cut = -INFINITY;
        s2.cand.clear();
        s2.cand_v.clear();
        s2.n_pool = 0;
        w_[part].sub += tic.lap();
    }

    // After the scan: the certificate of the round's i-th query, its next pool and violators
    // (with the scratch of `part`).
    void finish_query(int i, int part) {
        merge_part(i);
        InnerScratch& w = w_[part];
        const int n_full = n_full_;
        const bool out_of_budget = oob_;
        std::vector<int64_t>& idx = w.idx;
        std::vector<float>& vals = w.vals;
        std::vector<int>& order = w.order;
        Tic t4;
        struct Lap {
            Tic& t;
            double& acc;
            ~Lap() { acc += t.lap(); }
        } lap{t4, w.finish};
        HullQuery& st = qs[todo_[i]];
        HullStream& s = streams_[i];
        st.evals += N_;
        const double M = certified_max(w, s, st.g.data());
        const double gq = dot(st.g.data(), st.q.data(), d_);
        const double low = std::min(std::max((gq - M) / st.up, 0.0), st.up);
        if (st.up - low <= prm_.tol * st.up) {
            finish(st, low, n_full, true);
            return;
        }
        // the next pool: the points above the estimated cut (the largest pool_size of them
        // when the estimate let through many more)
        int64_t np = s.n_pool;
        st.pool_is_sub = false;
        if (np > 2 * static_cast<int64_t>(prm_.pool_size)) {
            order.resize(np);
            std::iota(order.begin(), order.end(), 0);
            const auto& pv = s.pool_v;
            std::nth_element(order.begin(), order.begin() + prm_.pool_size, order.end(),
                             [&pv](int a, int b) { return pv[a] > pv[b] || (pv[a] == pv[b] && a < b); });
            order.resize(prm_.pool_size);
            std::sort(order.begin(), order.end());
            // compact in place (order is ascending, so no entry is overwritten before use)
            for (size_t j = 0; j < order.size(); ++j) {
                const size_t o = static_cast<size_t>(order[j]);
                s.pool[j] = s.pool[o];
                s.pool_v[j] = s.pool_v[o];
            }
            np = static_cast<int64_t>(order.size());
        }
        st.pool.assign(s.pool.begin(), s.pool.begin() + np);
        const float* pool_v = s.pool_v.data();
        const double gp = dot(st.g.data(), st.p.data(), d_);
        idx.clear();
        vals.clear();
        for (size_t j = 0; j < st.pool.size(); ++j)
            if (static_cast<double>(pool_v[j]) > gp) idx.push_back(st.pool[j]), vals.push_back(pool_v[j]);
        const bool added = add(w, st, idx, vals);
        if (!added || out_of_budget) finish(st, low, n_full, false);
    }

    // The float32 directions a full round's scan multiplies T's rows with: G32(), or through
    // the view's map, and the scale of the products (nullptr: none; a view's s_t).
    const float* scan_dirs() const { return A_ ? H32_.data() : G32_.data(); }
    const float* scan_scale() const { return view_ ? dscale_ : nullptr; }

  private:
    const float* T_;
    int64_t N_;
    int d_;
    const int64_t* sub_;
    const float* sub32_;
    const float* sub_sq_;
    int64_t S_;
    HullParams prm_;
    Blas sgemm_;
    Scan scan_;
    InnerScratch* w_;  // the workspace's two (w_[0] outside run_views' per-query inner rounds)
    std::vector<float>& buf_;
    std::vector<float>& V_;
    std::vector<int> active_, todo_;  // open queries; those in the current full round
    std::vector<int> own_;            // those of active_ with a pool of their own (open_round)
    std::vector<int> subq_;           // those still on the subsample
    const double* Q_ = nullptr;       // the queries (B x d; begin_products to start_query)
    std::vector<float> G32_;          // the round's float32 directions (todo x d)
    int n_full_ = 0;
    bool oob_ = false;
    bool view_ = false;               // the rows are a view of T's (ViewMap)
    const double* A_ = nullptr;       // its map (nullptr: t / |t|)
    const double* At_ = nullptr;      // its transpose
    const float* dscale_ = nullptr;   // its scale s_t (N)
    double kappa_ = 1.0, a_fro_ = 0.0;
    std::vector<float> sub_scale_;    // s_t of the subsample (S)
    std::vector<double> x64_;         // scratch of transformed_err (d)
    std::vector<float> H32_;          // the round's scan directions fl32(A g32) (todo x d)
    std::vector<double> h64_;         // scratch: one of them in float64
    std::chrono::steady_clock::time_point start_;

    const float* row(int64_t t) const { return T_ + t * d_; }
    int n_groups() const { return subq_.empty() ? 0 : subq_.size() == 1 ? 1 : 2; }

    // Part 1 of the i-th query's scan into part 0: the largest value, the candidates (those
    // below the final cut drop out in certified_max, as they would in one pass) and the pool
    // (part 0's rows first: the indices stay ascending). The same stream as one pass over all
    // rows.
    void merge_part(size_t i) {
        HullStream& s = streams_[i];
        HullStream& t = streams2_[i];
        if (t.top > s.top) {
            s.top = t.top;
            s.cut = cut_for(s);
        }
        s.cand.insert(s.cand.end(), t.cand.begin(), t.cand.end());
        s.cand_v.insert(s.cand_v.end(), t.cand_v.begin(), t.cand_v.end());
        int64_t* pi = room(s.pool, s.n_pool + t.n_pool) + s.n_pool;
        float* pv = room(s.pool_v, s.n_pool + t.n_pool) + s.n_pool;
        std::copy(t.pool.begin(), t.pool.begin() + t.n_pool, pi);
        std::copy(t.pool_v.begin(), t.pool_v.begin() + t.n_pool, pv);
        s.n_pool += t.n_pool;
        t.top = t.cut = -INFINITY;
        t.cand.clear();
        t.cand_v.clear();
        t.n_pool = 0;
    }

    void fold_times() {
        for (int part = 0; part < 2; ++part) {
            InnerScratch& w = w_[part];
            tm_.start += w.start;
            tm_.qp += w.qp;
            tm_.pool += w.pool;
            tm_.sub_gemm += w.sub;
            tm_.finish += w.finish;
            w.start = w.qp = w.pool = w.sub = w.finish = 0;
        }
    }

    // The block's row of the training row r (d, a row of T or a copy of one): r itself, or
    // the view's, computed into w's scratch (valid until its next use).
    const float* own(InnerScratch& w, const float* r) const {
        if (!view_) return r;
        view_row(r, A_, d_, w.y.data(), w.row.data());
        return w.row.data();
    }

    // out = the float32 direction whose products with T's rows give those with g (d) with the
    // block's rows (before the scale): fl32(g), or fl32(A g) through the view's map.
    void dir32(InnerScratch& w, const double* g, float* out) const {
        if (!A_) {
            for (int k = 0; k < d_; ++k) out[k] = static_cast<float>(g[k]);
            return;
        }
        map_vec(At_, g, d_, w.y.data());
        for (int r = 0; r < d_; ++r) out[r] = static_cast<float>(w.y[r]);
    }

    void finish(HullQuery& st, double lower, int rounds, bool converged) {
        st.lower = lower;
        st.rounds = rounds;
        st.converged = converged;
        st.finished = true;
    }

    // Training point t (its row r: a copy in cache where there is one) joins the working set.
    void append(HullQuery& st, int64_t t, const float* r) {
        st.ws.push_back(t);
        st.R.insert(st.R.end(), r, r + d_);
        const size_t off = st.P.size();
        st.P.resize(off + d_);
        double* out = st.P.data() + off;
        const double* q = st.q.data();
        double n2 = 0.0;
#pragma omp simd reduction(+ : n2)
        for (int k = 0; k < d_; ++k) {
            const double v = static_cast<double>(r[k]) - q[k];
            out[k] = v;
            n2 += v * v;
        }
        st.Pn.push_back(n2);
    }

    // QP on the working set, then p = sum lam t (float64 of the float32 rows), g = q - p.
    void solve(HullQuery& st) {
        const int m = static_cast<int>(st.ws.size());
        st.qp.solve(st.P.data(), st.Pn.data(), m);
        if (st.qp.corral.empty()) {  // cannot happen; restart rather than report a wrong point
            st.qp.reset(d_);
            st.qp.solve(st.P.data(), st.Pn.data(), m);
        }
        ++st.n_qp;
        double total = 0.0;
        for (double l : st.qp.lam) total += l;
        st.p.assign(d_, 0.0);
        for (size_t c = 0; c < st.qp.corral.size(); ++c)
            axpy_f(st.qp.lam[c] / total, st.R.data() + static_cast<int64_t>(st.qp.corral[c]) * d_, st.p.data(), d_);
        st.g.resize(d_);
        for (int k = 0; k < d_; ++k) st.g[k] = st.q[k] - st.p[k];
        st.up = norm(st.g.data(), d_);
    }

    // Add the (at most add_per_round) largest violators idx (training indices, values vals;
    // their training rows src (copies in cache), or nullptr: read from T) not yet in the
    // working set; false when there is none.
    bool add(InnerScratch& w, HullQuery& st, const std::vector<int64_t>& idx, const std::vector<float>& vals,
             const std::vector<const float*>* src = nullptr) {
        std::vector<uint8_t>& mark = w.mark;
        for (int64_t t : st.ws) mark[t] = 1;
        std::vector<int>& fresh = w.fresh;
        fresh.clear();
        for (size_t i = 0; i < idx.size(); ++i)
            if (!mark[idx[i]]) fresh.push_back(static_cast<int>(i));
        for (int64_t t : st.ws) mark[t] = 0;
        if (fresh.empty()) return false;
        const size_t m = static_cast<size_t>(prm_.add_per_round);
        if (fresh.size() > m) {
            std::nth_element(fresh.begin(), fresh.begin() + m, fresh.end(), [&](int a, int b) {
                return vals[a] > vals[b] || (vals[a] == vals[b] && idx[a] < idx[b]);
            });
            fresh.resize(m);
        }
        std::sort(fresh.begin(), fresh.end(), [&](int a, int b) { return idx[a] < idx[b]; });
        if (static_cast<int>(st.ws.size()) >= prm_.max_working) {
            // past the cap keep only the current support (it holds the optimum's support)
            std::vector<int> pos(st.ws.size(), -1);
            std::vector<int64_t> ws;
            std::vector<float> R;
            std::vector<double> P, Pn;
            std::vector<char> keep(st.ws.size(), 0);
            for (int c : st.qp.corral) keep[c] = 1;
            for (size_t i = 0; i < st.ws.size(); ++i)
                if (keep[i]) {
                    pos[i] = static_cast<int>(ws.size());
                    ws.push_back(st.ws[i]);
                    R.insert(R.end(), st.R.begin() + i * d_, st.R.begin() + (i + 1) * d_);
                    P.insert(P.end(), st.P.begin() + i * d_, st.P.begin() + (i + 1) * d_);
                    Pn.push_back(st.Pn[i]);
                }
            st.ws.swap(ws);
            st.R.swap(R);
            st.P.swap(P);
            st.Pn.swap(Pn);
            st.qp.renumber(pos);
        }
        for (int i : fresh) append(st, idx[i], own(w, src ? (*src)[i] : row(idx[i])));
        return true;
    }

    // Aim at half the tolerance so that the full round usually certifies at once; below float32
    // resolution every point that might violate is a candidate.
    double inner_threshold(const HullQuery& st) const {
        return dot(st.g.data(), st.q.data(), d_) - (1.0 - 0.5 * prm_.tol) * st.up * st.up -
               2.0 * d_ * U32 * st.up * prm_.max_norm;
    }

    // Inner rounds of queries still searching the shared subsample, in lock step (they share
    // one GEMM per step), with w's scratch.
    void inner_sub(InnerScratch& w, std::vector<int> open) {
        std::vector<float> G32;
        std::vector<double> thr(qs.size());
        for (int it = 0; it < prm_.max_inner && !open.empty(); ++it) {
            std::vector<int> on_sub;
            for (int a : open) {
                HullQuery& st = qs[a];
                Tic t1;
                solve(st);
                w.qp += t1.lap();
                if (st.up <= 1e-6 * prm_.atol || it == prm_.max_inner - 1) {
                    st.inner_done = true;
                    continue;
                }
                thr[a] = inner_threshold(st);
                on_sub.push_back(a);
            }
            Tic t2;
            if (!on_sub.empty()) {
                const int nb = static_cast<int>(on_sub.size());
                G32.resize(static_cast<size_t>(nb) * d_);
                for (int i = 0; i < nb; ++i) dir32(w, qs[on_sub[i]].g.data(), G32.data() + static_cast<size_t>(i) * d_);
                float* V = room(w.V, static_cast<size_t>(nb) * S_);
                rows_times_rows(sgemm_, sub32_, static_cast<int>(S_), G32.data(), nb, d_, V);
                for (int i = 0; i < nb; ++i) {
                    HullQuery& st = qs[on_sub[i]];
                    float* v = V + static_cast<int64_t>(i) * S_;
                    if (view_) scale_by(v, sub_scale_.data(), S_);
                    w.idx.clear();
                    w.vals.clear();
                    w.src.clear();
                    for (int64_t s = 0; s < S_; ++s)
                        if (v[s] > thr[on_sub[i]])
                            w.idx.push_back(sub_[s]), w.vals.push_back(v[s]), w.src.push_back(sub32_ + s * d_);
                    if (w.idx.empty() || !add(w, st, w.idx, w.vals, &w.src)) st.inner_done = true;
                }
            }
            w.pool += t2.lap();
            std::vector<int> still;
            for (int a : open)
                if (!qs[a].inner_done) still.push_back(a);
            open.swap(still);
        }
    }

    // Inner rounds of one query on the pool its last full round found, with w's scratch (the
    // answer does not depend on which). The pool's rows are gathered once into that scratch
    // (it stays in cache for the query's rounds; per-query copies made while streaming cost
    // more than the whole pool search).
    void inner_own(InnerScratch& w, HullQuery& st) {
        Tic t0;
        const int64_t np = static_cast<int64_t>(st.pool.size());
        float* rows = room(w.pool32, static_cast<size_t>(np) * d_);
        gather_rows(T_, st.pool.data(), np, d_, rows);
        if (view_) {
            w.pscale.resize(np);
            for (int64_t s = 0; s < np; ++s) w.pscale[s] = dscale_[st.pool[s]];
        }
        float* pv = room(w.pool_v, static_cast<size_t>(np));
        float* g32 = w.g32.data();
        w.pool += t0.lap();
        for (int it = 0; it < prm_.max_inner; ++it) {
            solve(st);
            w.qp += t0.lap();
            if (st.up <= 1e-6 * prm_.atol || it == prm_.max_inner - 1) break;
            const double thr = inner_threshold(st);
            dir32(w, st.g.data(), g32);
            rows_dot(rows, np, d_, g32, pv);
            if (view_) scale_by(pv, w.pscale.data(), np);
            w.idx.clear();
            w.vals.clear();
            w.src.clear();
            for (int64_t s = 0; s < np; ++s)
                if (pv[s] > thr) w.idx.push_back(st.pool[s]), w.vals.push_back(pv[s]), w.src.push_back(rows + s * d_);
            const bool added = !w.idx.empty() && add(w, st, w.idx, w.vals, &w.src);
            w.pool += t0.lap();
            if (!added) break;
        }
        st.inner_done = true;
    }

    // ---------------------------------------------------------------- full rounds, streamed
    // A full round reads the N training rows in blocks: one GEMM per block for every open query
    // (its products stay in cache), then per query a running float32 maximum with the points
    // that could still hold the true maximum (certificate), and the points above an estimated
    // pool cut (the next pool: indices only; inner_own gathers its rows once per query into
    // scratch that stays in cache: copying up to 2 pool_size rows per query while streaming
    // wrote tens of MB per round at batch 64, more than the scan reads).
    std::vector<HullStream>& streams_;
    std::vector<HullStream>& streams2_;
    HullTimes& tm_;
    std::vector<int64_t> hits_[2];  // scratch of stream_block, per part

    static float round_down32(double x) {
        float y = static_cast<float>(x);
        if (static_cast<double>(y) > x) y = std::nextafter(y, -INFINITY);
        return y;
    }

    float cut_for(const HullStream& s) const {
        // only points within 2 err (+ the float32 rounding of the comparison) of the float32
        // maximum can hold the true maximum
        const double top = static_cast<double>(s.top);
        return round_down32(top - 2.0 * s.err - 4.0 * U32 * std::abs(top));
    }

    // The products v (n values of rows base..base+n-1) of one query.
    void stream_block(HullStream& s, const float* v, int64_t base, int64_t n, std::vector<int64_t>& hits) {
        const float bm = max_of(v, n);
        if (bm > s.top) {
            s.top = bm;
            s.cut = cut_for(s);
        }
        room(hits, n);
        if (bm >= s.cut) {
            const int64_t k = at_least(v, n, s.cut, hits.data());
            for (int64_t i = 0; i < k; ++i) s.cand.push_back(base + hits[i]), s.cand_v.push_back(v[hits[i]]);
        }
        if (bm >= s.pool_cut) {
            const int64_t k = at_least(v, n, s.pool_cut, hits.data());
            const int64_t had = s.n_pool;
            int64_t* pi = room(s.pool, had + k) + had;
            float* pv = room(s.pool_v, had + k) + had;
            for (int64_t i = 0; i < k; ++i) {
                const int64_t j = hits[i];
                pi[i] = base + j;
                pv[i] = v[j];
            }
            s.n_pool = had + k;
        }
    }

    // Certified max_t g.t (exact maximum + float64 rounding slack) once every block was seen.
    double certified_max(InnerScratch& w, HullStream& s, const double* g) {
        const float cut = cut_for(s);
        double best = -INFINITY;
        for (size_t j = 0; j < s.cand.size(); ++j)
            if (s.cand_v[j] >= cut) best = std::max(best, dot_fd(own(w, row(s.cand[j])), g, d_));
        const double slack = d_ * U64 / (1 - d_ * U64) * norm(g, d_) * prm_.max_norm;
        return best + slack;
    }

    // The round's float32 directions, per query the rounding bound of its products, and their
    // products with the subsample (ready_query takes each query's pool cut from them).
    void prepare_round() {
        const std::vector<int>& todo = todo_;
        const int nb = static_cast<int>(todo.size());
        std::vector<float>& G32 = G32_;
        G32.resize(static_cast<size_t>(nb) * d_);
        for (int i = 0; i < nb; ++i)
            for (int k = 0; k < d_; ++k)
                G32[static_cast<size_t>(i) * d_ + k] = static_cast<float>(qs[todo[i]].g[k]);
        if (A_) H32_.resize(static_cast<size_t>(nb) * d_);
        streams_.resize(std::max<size_t>(streams_.size(), nb));
        streams2_.resize(std::max<size_t>(streams2_.size(), nb));
        const double gamma = d_ * U32 / (1 - d_ * U32);
        for (int i = 0; i < nb; ++i) {
            HullStream& s = streams_[i];
            const double* g = qs[todo[i]].g.data();
            double n32 = 0.0, diff = 0.0;
            for (int k = 0; k < d_; ++k) {
                const double a = static_cast<double>(G32[static_cast<size_t>(i) * d_ + k]);
                n32 += a * a;
                diff += (g[k] - a) * (g[k] - a);
            }
            // |fl32(g32.t) - g.t| <= (gamma ||g32|| + ||g - g32||) ||t|| <= err (Higham 3.5)
            s.err = (gamma * std::sqrt(n32) + std::sqrt(diff)) * prm_.max_norm;
            if (A_) {
                s.err = transformed_err(G32.data() + static_cast<size_t>(i) * d_, n32, diff,
                                        H32_.data() + static_cast<size_t>(i) * d_);
            } else if (view_) {
                // t^ = fl32(t/|t|), s_t = fl32(1/|t|) (each within relative u of t/|t|, 1/|t|),
                // products fl32(fl32(g32.t) s_t): fl32(g32.t) within gamma |g32| |t|, times s_t
                // and its rounding add 3u |g32| (1 + gamma)(1 + u)^2; against g.t^: |g32| |t^ -
                // t/|t||| <= u |g32|, |g - g32| |t^|; |t^| <= max_norm (>= 1 - u); a 1 + 8u
                // factor covers the products of the small terms
                s.err = ((gamma + 5.0 * U32) * std::sqrt(n32) + std::sqrt(diff)) *
                        std::max(prm_.max_norm, 1.0) * (1.0 + 8.0 * U32);
            }
        }
        Tic t0;
        if (V_.size() < static_cast<size_t>(nb) * S_) V_.resize(static_cast<size_t>(nb) * S_);
        if (prm_.pool_size < N_) {
            rows_times_rows(sgemm_, sub32_, static_cast<int>(S_), scan_dirs(), nb, d_, V_.data());
            if (view_)
                for (int i = 0; i < nb; ++i) scale_by(V_.data() + static_cast<int64_t>(i) * S_, sub_scale_.data(), S_);
        }
        tm_.sub_gemm += t0.lap();
    }

    // The scan direction h32 = fl32(A g32) of one query (written to h32) and the rounding
    // bound of its products fl32(fl32(h32.t) s_t) against g.u_t, u_t = fl32(w_t) the block's
    // row (ViewMap); n32 = |g32|^2, diff = |g - g32|^2. With v_t = t A / |t A| exact:
    //  * |g.u_t - g32.v_t| <= |g - g32| |u_t| + |g32| |u_t - v_t|, where |u_t - v_t| <= u (the
    //    float32 rounding of the row, |w_t| <= 1 + u) + r, r = 4 (d + 4) u64 (a_fro kappa + 1)
    //    bounding the float64 rounding of t A (gamma64_d |t| a_fro, relative to |t A| at most
    //    gamma64_d a_fro kappa), doubled by the normalisation, plus its own few u64;
    //  * g32.v_t = (A g32).t / |t A|, and h32 = A g32 + e_h with |e_h| <= |h32 - fl64(A g32)| +
    //    gamma64_d a_fro |g32| (computed here); fl32(h32.t) = h32.t + e_p, |e_p| <= gamma_d
    //    |h32| |t| (Higham 3.5); s_t = (1 + e_s) / |t A| with |e_s| <= u + r (the float64 norm
    //    and the float32 rounding of 1 / norm), and the product's rounding another u; so the
    //    product minus g32.v_t is at most |g32| (2u + r)(1 + u) + (gamma_d |h32| + |e_h|) kappa
    //    (1 + u + r)(1 + u) (|g32.v_t| <= |g32| |v_t| = |g32|, |t| / |t A| <= kappa);
    //  * a factor 1 + 8u and one u64 term per bound cover the products of the small terms.
    double transformed_err(const float* g32, double n32, double diff, float* h32) {
        const int d = d_;
        h64_.resize(d);
        for (int k = 0; k < d; ++k) x64_[k] = static_cast<double>(g32[k]);
        map_vec(At_, x64_.data(), d, h64_.data());  // fl64(A g32), in any order within the bound
        double hn = 0.0, hd = 0.0;
        for (int r = 0; r < d; ++r) {
            const double acc = h64_[r];
            const float h = static_cast<float>(acc);
            h32[r] = h;
            hn += static_cast<double>(h) * h;
            hd += (static_cast<double>(h) - acc) * (static_cast<double>(h) - acc);
        }
        const double g = std::sqrt(n32);
        const double gamma = d * U32 / (1 - d * U32);
        const double g64 = (d + 2) * U64 / (1 - (d + 2) * U64);
        const double r = 4.0 * (d + 4) * U64 * (a_fro_ * kappa_ + 1.0);
        const double e_h = std::sqrt(hd) + g64 * a_fro_ * g;
        const double v = g * (3.0 * U32 + 2.0 * r) + (gamma * std::sqrt(hn) + e_h) * kappa_ * (1.0 + 2.0 * U32 + r);
        return v * (1.0 + 8.0 * U32) + std::sqrt(diff) * std::max(prm_.max_norm, 1.0);
    }
};

}  // namespace guard
