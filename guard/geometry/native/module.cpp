// Python bindings of the compiled geometry cores (guard.geometry._native); the Python side is
// guard/geometry/native.py. Every entry point takes whole blocks of queries and releases the GIL
// while it computes (it takes it back only to call a scan the caller supplied, e.g. a GPU one).
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <mutex>

#include "hull_core.hpp"
#include "hull_pair.hpp"
#include "margin_qp.hpp"
#include "union_core.hpp"

namespace py = pybind11;
using namespace guard;

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

namespace {

template <typename F>
F blas_fn(const py::capsule& cap) {
    void* ptr = PyCapsule_GetPointer(cap.ptr(), PyCapsule_GetName(cap.ptr()));
    if (!ptr) throw py::error_already_set();
    return reinterpret_cast<F>(ptr);
}

template <typename T>
void need_2d(const carray<T>& a, const char* name, int64_t cols = -1) {
    if (a.ndim() != 2 || (cols >= 0 && a.shape(1) != cols))
        throw std::invalid_argument(std::string(name) + ": expected a 2-d C-contiguous array");
}

// One index's compiled core: holds references to its arrays (kept alive by this object) and
// scratch memory reused between calls (one caller at a time; a concurrent caller gets its own).
// Either over the rows T themselves, or a view of them (guard/geometry/hull_view.py: the rows
// fl32(t A / |t A|), or fl32(t / |t|) without A, computed on demand; ViewMap in hull_core.hpp).
class HullCore {
  public:
    HullCore(carray<float> T, carray<int64_t> sub, carray<float> sub32, carray<float> sub_sq,
             py::dict prm_in, py::dict blas)
        : T_(T), sub_(sub), sub32_(sub32), sub_sq_(sub_sq) {
        init(prm_in, blas);
        need_2d(sub32, "sub32", d_);
        if (sub32.shape(0) != sub.shape(0) || sub_sq.shape(0) != sub.shape(0))
            throw std::invalid_argument("subsample sizes differ");
    }

    // The view of T through A (d x d float64, or None: the directions t / |t|) with scale s_t =
    // fl32(1 / |t A|) (N), kappa >= max_t |t| / |t A| and a_fro >= |A|_F (the certificate's).
    HullCore(carray<float> T, carray<int64_t> sub, carray<float> scale, py::object A, double kappa,
             double a_fro, py::dict prm_in, py::dict blas)
        : T_(T), sub_(sub), scale_(scale), view_(true) {
        init(prm_in, blas);
        const int64_t N = T.shape(0);
        if (scale.ndim() != 1 || scale.shape(0) != N)
            throw std::invalid_argument("scale: one value per point expected");
        if (!A.is_none()) {
            A_ = A.cast<carray<double>>();
            need_2d(A_, "A", d_);
            if (A_.shape(0) != d_) throw std::invalid_argument("A: expected a d x d map");
            if (!(kappa >= 1e-300 && std::isfinite(kappa) && a_fro > 0 && std::isfinite(a_fro)))
                throw std::invalid_argument("kappa and a_fro must be finite and > 0");
            At_.resize(static_cast<size_t>(d_) * d_);
            for (int r = 0; r < d_; ++r)
                for (int k = 0; k < d_; ++k) At_[static_cast<size_t>(k) * d_ + r] = A_.data()[static_cast<size_t>(r) * d_ + k];
            map_.A = A_.data();
            map_.At = At_.data();
            map_.kappa = kappa;
            map_.a_fro = a_fro;
        }
        map_.scale = scale_.data();
    }

    void init(py::dict prm_in, py::dict blas) {
        sgemm_.sgemm = blas_fn<sgemm_t>(blas["sgemm"].cast<py::capsule>());
        sgemm_.sgemv = blas_fn<sgemv_t>(blas["sgemv"].cast<py::capsule>());
        need_2d(T_, "T");
        d_ = static_cast<int>(T_.shape(1));
        if (sub_.ndim() != 1 || sub_.shape(0) < 1)
            throw std::invalid_argument("sub: expected a non-empty subsample");
        for (py::ssize_t s = 0; s < sub_.shape(0); ++s)
            if (sub_.data()[s] < 0 || sub_.data()[s] >= T_.shape(0))
                throw std::invalid_argument("sub: an index out of range");
        prm_.k0 = prm_in["k0"].cast<int>();
        prm_.tol = prm_in["tol"].cast<double>();
        prm_.atol = prm_in["atol"].cast<double>();
        prm_.max_norm = prm_in["max_norm"].cast<double>();
        prm_.max_rounds = prm_in["max_rounds"].cast<int>();
        prm_.add_per_round = prm_in["add_per_round"].cast<int>();
        prm_.pool_size = prm_in["pool_size"].cast<int>();
        prm_.max_working = prm_in["max_working"].cast<int>();
        prm_.max_inner = prm_in["max_inner"].cast<int>();
        prm_.time_budget_s = prm_in["time_budget_s"].cast<double>();
    }

    py::dict query(carray<double> Q, py::object scan, int top_support) {
        const int64_t N = T_.shape(0);
        const int d = d_;
        need_2d(Q, "Q", d);
        HullBlock::Scan fn;
        if (!scan.is_none()) {
            fn = [scan, N, d](const float* G, int B, float* V) {
                py::gil_scoped_acquire gil;
                carray<float> g({static_cast<py::ssize_t>(B), static_cast<py::ssize_t>(d)});
                std::memcpy(g.mutable_data(), G, sizeof(float) * B * d);
                carray<float> v = scan(g).cast<carray<float>>();
                if (v.ndim() != 2 || v.shape(0) != B || v.shape(1) != N)
                    throw std::runtime_error("scan returned an array of the wrong shape");
                std::memcpy(V, v.data(), sizeof(float) * B * N);
            };
        }
        const int B = static_cast<int>(Q.shape(0));
        std::unique_lock<std::mutex> lock;
        HullWorkspace own;
        if (view_ && fn) throw std::invalid_argument("a view's core scans on the CPU only");
        HullBlock block = make_block(acquire(lock, own), fn);
        {
            py::gil_scoped_release nogil;
            block.run(Q.data(), B);
        }
        return results(block, B, N, top_support);
    }

    py::dict times() const {
        const HullTimes& t = work_.times;
        py::dict out;
        out["start"] = t.start;
        out["qp"] = t.qp;
        out["pool"] = t.pool;
        out["sub_gemm"] = t.sub_gemm;
        out["scan_gemm"] = t.scan_gemm;
        out["scan_stream"] = t.scan_stream;
        out["finish"] = t.finish;
        return out;
    }

    // This core's scratch when no other caller holds it (lock then owns it), else `own`.
    HullWorkspace& acquire(std::unique_lock<std::mutex>& lock, HullWorkspace& own) {
        lock = std::unique_lock<std::mutex>(busy_, std::try_to_lock);
        return lock.owns_lock() ? work_ : own;
    }

    // A block over this core's rows; a view's with the subsample rows sub32 of T when given
    // (another core's of the same points and subsample), else its own (gathered once).
    HullBlock make_block(HullWorkspace& ws, HullBlock::Scan fn = {}, const float* sub32 = nullptr) {
        if (!view_)
            return HullBlock(T_.data(), T_.shape(0), d_, sub_.data(), sub32_.data(), sub_sq_.data(),
                             sub_.shape(0), prm_, sgemm_, std::move(fn), ws);
        if (!sub32) {
            std::call_once(own_sub_once_, [this] {
                own_sub32_.resize(static_cast<size_t>(sub_.shape(0)) * d_);
                gather_rows(T_.data(), sub_.data(), sub_.shape(0), d_, own_sub32_.data());
            });
            sub32 = own_sub32_.data();
        }
        return HullBlock(T_.data(), T_.shape(0), d_, sub_.data(), sub32, nullptr, sub_.shape(0), prm_,
                         sgemm_, std::move(fn), ws, &map_);
    }

    // The subsample rows of T a view `v` of the same points may borrow: this core's, when
    // both draw the same subsample (else nullptr).
    const float* lend_sub32(const HullCore& v) const {
        if (view_ || v.sub_.shape(0) != sub_.shape(0)) return nullptr;
        if (std::memcmp(v.sub_.data(), sub_.data(), sizeof(int64_t) * sub_.shape(0)) != 0) return nullptr;
        return sub32_.data();
    }

    bool is_view() const { return view_; }
    int64_t size() const { return T_.shape(0); }
    int dim() const { return d_; }
    const float* points() const { return T_.data(); }
    const Blas& blas() const { return sgemm_; }

    py::dict results(const HullBlock& block, int B, int64_t N, int top_support) {
        const int d = d_;
        carray<double> upper(B), lower(B), proj({B, d}), sup_alpha({B, top_support});
        carray<int64_t> rounds(B), qp(B), sup_idx({B, top_support});
        carray<bool> converged(B);
        carray<double> frac(B);
        auto up = upper.mutable_unchecked<1>();
        auto lo = lower.mutable_unchecked<1>();
        auto pr = proj.mutable_unchecked<2>();
        auto sa = sup_alpha.mutable_unchecked<2>();
        auto si = sup_idx.mutable_unchecked<2>();
        auto ro = rounds.mutable_unchecked<1>();
        auto nq = qp.mutable_unchecked<1>();
        auto co = converged.mutable_unchecked<1>();
        auto fr = frac.mutable_unchecked<1>();
        for (int b = 0; b < B; ++b) {
            const HullQuery& st = block.qs[b];
            up(b) = st.up;
            lo(b) = st.lower;
            for (int k = 0; k < d; ++k) pr(b, k) = st.p[k];
            ro(b) = st.rounds;
            nq(b) = st.n_qp;
            co(b) = st.converged;
            fr(b) = static_cast<double>(st.evals) /
                    static_cast<double>(std::max<int64_t>(N * st.rounds, 1));
            // the largest weights first (ties: lower training index)
            const auto& c = st.qp.corral;
            double total = 0.0;
            for (double l : st.qp.lam) total += l;
            std::vector<int> order(c.size());
            std::iota(order.begin(), order.end(), 0);
            std::sort(order.begin(), order.end(), [&](int x, int y) {
                const double lx = st.qp.lam[x], ly = st.qp.lam[y];
                return lx > ly || (lx == ly && st.ws[c[x]] < st.ws[c[y]]);
            });
            for (int j = 0; j < top_support; ++j) {
                if (j < static_cast<int>(order.size()) && st.qp.lam[order[j]] > 0) {
                    si(b, j) = st.ws[c[order[j]]];
                    sa(b, j) = st.qp.lam[order[j]] / total;
                } else {
                    si(b, j) = -1;
                    sa(b, j) = 0.0;
                }
            }
        }
        py::dict out;
        out["upper"] = upper;
        out["lower"] = lower;
        out["projection"] = proj;
        out["support_idx"] = sup_idx;
        out["support_alpha"] = sup_alpha;
        out["rounds"] = rounds;
        out["converged"] = converged;
        out["qp_solves"] = qp;
        out["exact_fraction"] = frac;
        return out;
    }

  private:
    carray<float> T_;
    carray<int64_t> sub_;
    carray<float> sub32_, sub_sq_;  // (not a view's)
    carray<float> scale_;           // a view's
    carray<double> A_;
    std::vector<double> At_;        // A's transpose
    bool view_ = false;
    ViewMap map_;
    std::vector<float> own_sub32_;  // a view's subsample rows when queried on its own
    std::once_flag own_sub_once_;
    Blas sgemm_;
    int d_;
    HullParams prm_;
    HullWorkspace work_;
    std::mutex busy_;
};

// The union of learned regions (guard.geometry.regions.UnionOfBalls): holds references to its
// arrays; query() is exact (see union_core.hpp).
class UnionCore {
  public:
    UnionCore(carray<float> T, carray<double> r, carray<double> r2, carray<float> r32,
              carray<float> r2_32, carray<float> off32, carray<int64_t> huge, double big,
              double r_max, double max_norm, py::dict blas)
        : T_(T), r_(r), r2_(r2), r32_(r32), r2_32_(r2_32), off32_(off32), huge_(huge) {
        need_2d(T, "points");
        const int64_t N = T.shape(0);
        for (const py::ssize_t n : {r.shape(0), r2.shape(0), r32.shape(0), r2_32.shape(0), off32.shape(0)})
            if (n != N) throw std::invalid_argument("one radius per point expected");
        u_.T = T.data();
        u_.N = N;
        u_.d = static_cast<int>(T.shape(1));
        u_.r = r.data();
        u_.r2 = r2.data();
        u_.r32 = r32.data();
        u_.r2_32 = r2_32.data();
        u_.off32 = off32.data();
        u_.huge = huge.data();
        u_.n_huge = huge.shape(0);
        u_.big = big;
        u_.r_max = r_max;
        u_.max_norm = max_norm;
        blas_.sgemm = blas_fn<sgemm_t>(blas["sgemm"].cast<py::capsule>());
        blas_.sgemv = blas_fn<sgemv_t>(blas["sgemv"].cast<py::capsule>());
    }

    py::tuple query(carray<float> Q) {
        need_2d(Q, "queries", u_.d);
        const int64_t M = Q.shape(0);
        carray<bool> in_union(M);
        carray<int64_t> n_balls(M), best(M);
        carray<double> slack(M);
        UnionOut out{in_union.mutable_data(), n_balls.mutable_data(), slack.mutable_data(),
                     best.mutable_data()};
        {
            py::gil_scoped_release nogil;
            UnionScan scan(u_, blas_);
            scan.run(Q.data(), M, out);
        }
        return py::make_tuple(in_union, n_balls, slack, best);
    }

    const UnionData& data() const { return u_; }
    const Blas& blas() const { return blas_; }

  private:
    carray<float> T_;
    carray<double> r_, r2_;
    carray<float> r32_, r2_32_, off32_;
    carray<int64_t> huge_;
    UnionData u_;
    Blas blas_;
};

// One view of query_views: a view core over raw's points and its queries.
struct ViewArgs {
    HullCore* core;
    carray<double> Q;
    int top;
};

// The raw hull (core `raw`, queries Q: B x d) and views of its points in one set of passes over
// raw's points (hull_pair.hpp): `views`, a list of tuples (core, Qv, top_support), each core a
// view of raw's points (HullCore's second constructor, over the same memory) and Qv (B x d) the
// queries in its space; on one or two threads (the same answers). With union_core (a UnionCore
// over the same points) and Qu (B x d float32) the union's membership rides on the first pass:
// (raw's results, [each view's results], regions tuple as UnionCore.query gives it, or None).
py::tuple query_views(HullCore& raw, carray<double> Q, int top_raw, py::list views_in,
                      int threads, UnionCore* un, py::object Qu_obj) {
    const int64_t N = raw.size();
    const int d = raw.dim();
    need_2d(Q, "Q", d);
    const int B = static_cast<int>(Q.shape(0));
    if (threads < 1) throw std::invalid_argument("query_views: threads must be >= 1");
    if (raw.is_view()) throw std::invalid_argument("query_views: raw must not be a view");
    std::vector<ViewArgs> va;
    for (py::handle h : views_in) {
        py::tuple t = h.cast<py::tuple>();
        if (t.size() != 3) throw std::invalid_argument("query_views: a view is a 3-tuple");
        ViewArgs v{t[0].cast<HullCore*>(), t[1].cast<carray<double>>(), t[2].cast<int>()};
        for (const ViewArgs& o : va)
            if (o.core == v.core) throw std::invalid_argument("query_views: two different cores expected");
        if (!v.core->is_view() || v.core->points() != raw.points() || v.core->size() != N ||
            v.core->dim() != d)
            throw std::invalid_argument("query_views: a view must be a view core of raw's points");
        need_2d(v.Q, "Qv", d);
        if (v.Q.shape(0) != B) throw std::invalid_argument("query_views: Q and Qv differ in rows");
        if (v.top < 0) throw std::invalid_argument("query_views: top_support must be >= 0");
        va.push_back(std::move(v));
    }
    const int K = static_cast<int>(va.size());
    std::unique_lock<std::mutex> lock_r;
    HullWorkspace own_r;
    HullWorkspace& ws = raw.acquire(lock_r, own_r);
    std::vector<std::unique_lock<std::mutex>> locks(K);
    std::vector<std::unique_ptr<HullWorkspace>> owns(K);
    std::vector<HullBlock> blocks;
    blocks.reserve(K + 1);
    blocks.push_back(raw.make_block(ws));
    for (int k = 0; k < K; ++k) {
        owns[k] = std::make_unique<HullWorkspace>();
        blocks.push_back(va[k].core->make_block(va[k].core->acquire(locks[k], *owns[k]), {},
                                                raw.lend_sub32(*va[k].core)));
    }
    std::vector<ScanView> views{{&blocks[0], Q.data()}};
    for (int k = 0; k < K; ++k) views.push_back({&blocks[k + 1], va[k].Q.data()});
    carray<float> Qu;
    std::unique_ptr<UnionScan> scan;
    carray<bool> in_union(un ? B : 0);
    carray<int64_t> n_balls(un ? B : 0), best(un ? B : 0);
    carray<double> slack(un ? B : 0);
    UnionOut uout{in_union.mutable_data(), n_balls.mutable_data(), slack.mutable_data(),
                  best.mutable_data()};
    if (un) {
        Qu = Qu_obj.cast<carray<float>>();
        need_2d(Qu, "Qu", d);
        if (Qu.shape(0) != B) throw std::invalid_argument("query_views: Q and Qu differ in rows");
        if (un->data().T != raw.points() || un->data().N != N)
            throw std::invalid_argument("query_views: the union's balls are not centred on the raw hull's points");
        scan = std::make_unique<UnionScan>(un->data(), un->blas());
    }
    std::vector<float> bufs[2];
    bufs[0].swap(ws.buf);  // (the core's scratch: its pages are already touched)
    {
        py::gil_scoped_release nogil;
        run_views(views, B, raw.points(), N, d, raw.blas(), std::min(threads, 2), bufs, ws.times,
                  scan.get(), un ? Qu.data() : nullptr, &uout);
    }
    bufs[0].swap(ws.buf);
    py::object regions = py::none();
    if (un) regions = py::make_tuple(in_union, n_balls, slack, best);
    py::list out;
    for (int k = 0; k < K; ++k) out.append(va[k].core->results(blocks[k + 1], B, N, va[k].top));
    return py::make_tuple(raw.results(blocks[0], B, N, top_raw), out, regions);
}

// The rows (n x d float32) of the view of T (N x d) through A (d x d float64, or None) at the
// training indices `rows` (n; None: all N), as a view core computes them (view_row).
carray<float> view_rows(carray<float> T, py::object A_obj, py::object rows_obj) {
    need_2d(T, "T");
    const int64_t N = T.shape(0);
    const int d = static_cast<int>(T.shape(1));
    carray<double> A;
    if (!A_obj.is_none()) {
        A = A_obj.cast<carray<double>>();
        need_2d(A, "A", d);
        if (A.shape(0) != d) throw std::invalid_argument("A: expected a d x d map");
    }
    carray<int64_t> rows;
    const bool all = rows_obj.is_none();
    if (!all) {
        rows = rows_obj.cast<carray<int64_t>>();
        if (rows.ndim() != 1) throw std::invalid_argument("rows: expected (n,)");
        for (py::ssize_t i = 0; i < rows.shape(0); ++i)
            if (rows.data()[i] < 0 || rows.data()[i] >= N) throw std::invalid_argument("rows: an index out of range");
    }
    const int64_t n = all ? N : rows.shape(0);
    carray<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(d)});
    {
        py::gil_scoped_release nogil;
        std::vector<double> y(d);
        const double* a = A.size() ? A.data() : nullptr;
        float* o = out.mutable_data();
        for (int64_t i = 0; i < n; ++i) {
            const int64_t t = all ? i : rows.data()[i];
            view_row(T.data() + t * d, a, d, y.data(), o + i * d);
        }
    }
    return out;
}

// Wolfe's min-norm point of conv(rows of P) (m x d): (weights (m,), major cycles). For tests.
py::tuple min_norm_point(carray<double> P) {
    need_2d(P, "P");
    const int m = static_cast<int>(P.shape(0)), d = static_cast<int>(P.shape(1));
    if (m < 1) throw std::invalid_argument("P: expected at least one point");
    std::vector<double> Pn(m);
    for (int i = 0; i < m; ++i) Pn[i] = dot(P.data() + static_cast<int64_t>(i) * d, P.data() + static_cast<int64_t>(i) * d, d);
    Wolfe w;
    w.reset(d);
    const int major = w.solve(P.data(), Pn.data(), m);
    carray<double> a(m);
    std::fill(a.mutable_data(), a.mutable_data() + m, 0.0);
    double total = 0.0;
    for (double l : w.lam) total += l;
    for (size_t c = 0; c < w.corral.size(); ++c) a.mutable_data()[w.corral[c]] = w.lam[c] / total;
    return py::make_tuple(a, major);
}

// The margin QPs of the pairs (rows[p], cols[p]) of X (N x f) against the head (W, b), each
// pair's class i = pred[rows[p]] (MarginQP): (distance (P,), flip point (P, f), certificate
// gap (P,), status (P,): 0 solved, 1 unreachable, 2 not solved here; steps (P,): changes of the
// active set, 1 where the closed-form foot point is the answer).
py::tuple margin_qps(carray<double> X, carray<double> W, carray<double> b, carray<int64_t> pred,
                     carray<int64_t> rows, carray<int64_t> cols, bool nonneg) {
    need_2d(X, "X");
    need_2d(W, "W", X.shape(1));
    const int n = static_cast<int>(W.shape(0)), f = static_cast<int>(W.shape(1));
    const int64_t N = X.shape(0), P = rows.shape(0);
    if (b.ndim() != 1 || b.shape(0) != n) throw std::invalid_argument("b: expected (n,)");
    if (pred.ndim() != 1 || pred.shape(0) != N) throw std::invalid_argument("pred: expected (N,)");
    if (rows.ndim() != 1 || cols.ndim() != 1 || cols.shape(0) != P)
        throw std::invalid_argument("rows, cols: expected two (P,) arrays");
    const int64_t* R = rows.data();
    const int64_t* C = cols.data();
    const int64_t* pr = pred.data();
    for (int64_t p = 0; p < P; ++p)
        if (R[p] < 0 || R[p] >= N || C[p] < 0 || C[p] >= n || pr[R[p]] < 0 || pr[R[p]] >= n ||
            pr[R[p]] == C[p])
            throw std::invalid_argument("rows, cols, pred: a pair out of range");
    carray<double> dist(P), gap(P), Y({P, static_cast<int64_t>(f)});
    carray<int8_t> status(P);
    carray<int32_t> steps(P);
    {
        py::gil_scoped_release nogil;
        MarginQP qp(W.data(), b.data(), n, f, nonneg);
        std::vector<double> z(n);
        int64_t last = -1;
        for (int64_t p = 0; p < P; ++p) {
            const double* x = X.data() + R[p] * f;
            if (R[p] != last) {
                for (int k = 0; k < n; ++k) z[k] = dot(W.data() + static_cast<int64_t>(k) * f, x, f) + b.data()[k];
                last = R[p];
            }
            const MarginResult res = qp.solve(x, z.data(), static_cast<int>(pr[R[p]]),
                                              static_cast<int>(C[p]), Y.mutable_data() + p * f);
            dist.mutable_data()[p] = res.d;
            gap.mutable_data()[p] = res.gap;
            status.mutable_data()[p] = static_cast<int8_t>(res.status);
            steps.mutable_data()[p] = res.steps;
        }
    }
    return py::make_tuple(dist, Y, gap, status, steps);
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Compiled cores of guard.geometry (see guard/geometry/native.py).";
    py::class_<HullCore>(m, "HullCore")
        .def(py::init<carray<float>, carray<int64_t>, carray<float>, carray<float>, py::dict,
                      py::dict>(),
             py::arg("T"), py::arg("sub"), py::arg("sub32"), py::arg("sub_sq"), py::arg("params"),
             py::arg("blas"))
        .def(py::init<carray<float>, carray<int64_t>, carray<float>, py::object, double, double,
                      py::dict, py::dict>(),
             py::arg("T"), py::arg("sub"), py::arg("scale"), py::arg("A"), py::arg("kappa"),
             py::arg("a_fro"), py::arg("params"), py::arg("blas"))
        .def("query", &HullCore::query, py::arg("Q"), py::arg("scan"), py::arg("top_support"))
        .def("times", &HullCore::times,
             "seconds per phase, summed over the calls that used this core's own scratch");
    m.def("query_views", &query_views, py::arg("raw"), py::arg("Q"), py::arg("top_raw"),
          py::arg("views"), py::arg("threads") = 1, py::arg("union_core") = nullptr,
          py::arg("Qu") = py::none());
    m.def("min_norm_point", &min_norm_point, py::arg("P"));
    m.def("view_rows", &view_rows, py::arg("T"), py::arg("A"), py::arg("rows") = py::none());
    m.def("margin_qps", &margin_qps, py::arg("X"), py::arg("W"), py::arg("b"), py::arg("pred"),
          py::arg("rows"), py::arg("cols"), py::arg("nonneg"));
    py::class_<UnionCore>(m, "UnionCore")
        .def(py::init<carray<float>, carray<double>, carray<double>, carray<float>, carray<float>,
                      carray<float>, carray<int64_t>, double, double, double, py::dict>(),
             py::arg("points"), py::arg("radii"), py::arg("r2"), py::arg("r32"), py::arg("r2_32"),
             py::arg("off32"), py::arg("huge"), py::arg("big"), py::arg("r_max"),
             py::arg("max_norm"), py::arg("blas"))
        .def("query", &UnionCore::query, py::arg("queries"));
}
