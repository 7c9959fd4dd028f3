// Membership in the union of learned regions (balls B(t, r_t)), exact: the compiled twin of
// guard.geometry.regions.UnionOfBalls.query's numpy path, with the same float32 arithmetic and
// the same rounding bounds (documented there), fused per block of training rows so the products
// never leave the cache:
//   V = fl32(fl32(2 fl32(q.t) + fl32(r^2 - |t|^2)) - fl32(|q|^2))  ~  r^2 - |q - t|^2,
// inside when V > err, outside when V < -err, re-checked in float64 in between; the best slack
// r - |q - t| among the points whose float32 slack could be the maximum, in float64.
#pragma once

#include "kernels.hpp"

namespace guard {

struct UnionData {
    const float* T = nullptr;     // N x d centres
    int64_t N = 0;
    int d = 0;
    const double* r = nullptr;    // radii
    const double* r2 = nullptr;   // radii^2
    const float* r32 = nullptr;
    const float* r2_32 = nullptr;
    const float* off32 = nullptr; // r^2 - |t|^2 (-inf for huge balls)
    const int64_t* huge = nullptr;
    int64_t n_huge = 0;
    double big = 0, r_max = 0, max_norm = 0;
};

struct UnionOut {
    bool* in_union;
    int64_t* n_balls;
    double* slack;
    int64_t* best;
};

// The float32 pass of UnionScan::block over n balls: V (products q.t) becomes the slacks
// r - |q - t|, vb the values v ~ r^2 - |q - t|^2; returns how many have v > e32 (inside for
// sure).
GUARD_CLONES inline int64_t ball_slacks(float* V, int64_t n, const float* off, const float* r2_32,
                                        const float* r32, float e32, float qn, float* vb) {
    int64_t c = 0;
#pragma omp simd reduction(+ : c)
    for (int64_t j = 0; j < n; ++j) {
        float v = V[j] * 2.0f;
        v = v + off[j];
        v = v - qn;
        vb[j] = v;
        c += v > e32;
        // slack r - |q - t| in float32 (-inf for huge balls: off32 = -inf)
        float w = r2_32[j] - v;
        w = w > 0.0f ? w : 0.0f;
        w = std::sqrt(w);
        V[j] = r32[j] - w;
    }
    return c;
}

// The union's scan of blocks of queries. run() scans on its own; begin() / scan_block() / end()
// let another scan feed it the products (run_views: the union rides on the hulls' first pass), in
// one or two parts (e.g. two threads, each over its own rows; end() merges them, with the same
// answers as one pass).
class UnionScan {
  public:
    UnionScan(const UnionData& u, const Blas& blas) : u_(u), blas_(blas) {}

    void run(const float* Q, int64_t M, UnionOut out) {
        constexpr int CH = 64;  // queries per GEMM
        for (int64_t lo = 0; lo < M; lo += CH) {
            const int nq = static_cast<int>(std::min<int64_t>(CH, M - lo));
            const int64_t BL = rows_per_block(nq);
            begin(Q + lo * u_.d, nq);
            if (buf_.size() < static_cast<size_t>(nq) * BL) buf_.resize(static_cast<size_t>(nq) * BL);
            for (int64_t t0 = 0; t0 < u_.N; t0 += BL) {
                const int64_t n = std::min(BL, u_.N - t0);
                rows_times_rows(blas_, u_.T + t0 * u_.d, static_cast<int>(n), Q + lo * u_.d, nq, u_.d, buf_.data());
                scan_block(buf_.data(), n, t0, 0);
            }
            end(out, lo);
        }
    }

    static int64_t rows_per_block(int nq) { return std::max<int64_t>(256, (int64_t{1} << 15) / nq); }

    // The queries Q (nq x d, float32) of the next scan.
    void begin(const float* Q, int nq) {
        const int d = u_.d;
        const double gamma = d * U32 / (1 - d * U32);
        nq_ = nq;
        q64_.resize(static_cast<size_t>(nq) * d);
        err_.resize(nq);
        mag_.resize(nq);
        qn32_.resize(nq);
        err32_.resize(nq);
        for (int i = 0; i < nq; ++i) {
            double qn = 0.0;
            for (int k = 0; k < d; ++k) {
                const double v = static_cast<double>(Q[static_cast<size_t>(i) * d + k]);
                q64_[static_cast<size_t>(i) * d + k] = v;
                qn += v * v;
            }
            qn32_[i] = static_cast<float>(qn);
            const double qx = std::sqrt(qn) * u_.max_norm;
            err_[i] = (2.0 * gamma * qx + 4.0 * U32 * (u_.big + 2.0 * qx + qn)) * 1.01 + 1e-30;
            err32_[i] = static_cast<float>(err_[i]);
            mag_[i] = std::sqrt(qn) + u_.max_norm + u_.r_max;
        }
        for (Part& p : parts_) {
            p.count.assign(nq, 0);
            p.top.assign(nq, -INFINITY);
            p.cut.assign(nq, -INFINITY);
            p.cand.resize(nq);
            p.cand_v.resize(nq);
            for (int i = 0; i < nq; ++i) p.cand[i].clear(), p.cand_v[i].clear();
        }
    }

    // The float32 products V (nq x n: row i = query i; overwritten) of rows t0..t0+n-1.
    void scan_block(float* V, int64_t n, int64_t t0, int part) {
        Part& p = parts_[part];
        room(p.hits, static_cast<size_t>(n));
        for (int i = 0; i < nq_; ++i) {
            float* v = V + static_cast<int64_t>(i) * n;
            p.count[i] += block(p, v, n, t0, err32_[i], qn32_[i], &q64_[static_cast<size_t>(i) * u_.d]);
            const float bm = max_of(v, n);
            if (bm > p.top[i]) {
                p.top[i] = bm;
                p.cut[i] = static_cast<float>(static_cast<double>(bm) - tol(i, bm));
            }
            if (bm >= p.cut[i]) {
                const int64_t k = at_least(v, n, p.cut[i], p.hits.data());
                for (int64_t h = 0; h < k; ++h)
                    p.cand[i].push_back(t0 + p.hits[h]), p.cand_v[i].push_back(v[p.hits[h]]);
            }
        }
    }

    // Every row seen: the answers of the nq queries, into out at base.
    void end(UnionOut out, int64_t base) {
        const Part& p = parts_[0];
        const Part& o = parts_[1];
        for (int i = 0; i < nq_; ++i) {
            const double* q = &q64_[static_cast<size_t>(i) * u_.d];
            const float top = std::max(p.top[i], o.top[i]);
            int64_t count = p.count[i] + o.count[i];
            // the candidates of both parts (those below the final cut drop out here, as they
            // would in one pass)
            const float fcut = static_cast<float>(static_cast<double>(top) - tol(i, top));
            double best = -INFINITY;
            int64_t best_t = -1;
            auto consider = [&](int64_t t) {
                const double s = u_.r[t] - std::sqrt(d2(q, t));
                if (s > best || (s == best && t < best_t)) best = s, best_t = t;
            };
            for (const Part* pp : {&p, &o})
                for (size_t j = 0; j < pp->cand[i].size(); ++j)
                    if (pp->cand_v[i][j] >= fcut) consider(pp->cand[i][j]);
            for (int64_t h = 0; h < u_.n_huge; ++h) {  // huge balls: exactly, in float64
                const int64_t t = u_.huge[h];
                count += u_.r2[t] > d2(q, t);
                consider(t);
            }
            out.n_balls[base + i] = count;
            out.in_union[base + i] = count > 0;
            out.slack[base + i] = best;
            out.best[base + i] = best_t;
        }
    }

  private:
    struct Part {  // the running state of one part of a scan
        std::vector<int64_t> count;
        std::vector<float> top, cut;
        std::vector<std::vector<int64_t>> cand;
        std::vector<std::vector<float>> cand_v;
        std::vector<float> vbuf;     // one query's float32 values of r^2 - |q - t|^2 (a block)
        std::vector<int64_t> hits;   // positions in a block
    };

    UnionData u_;
    Blas blas_;
    std::vector<float> buf_;
    int nq_ = 0;
    std::vector<double> q64_, err_, mag_;
    std::vector<float> qn32_, err32_;
    Part parts_[2];

    double tol(int i, float t) const {
        return (2.0 * std::sqrt(err_[i]) + 8.0 * U32 * (mag_[i] + std::abs(static_cast<double>(t)))) * 1.01;
    }

    double d2(const double* q, int64_t t) const {
        const float* x = u_.T + t * u_.d;
        double s = 0.0;
        for (int k = 0; k < u_.d; ++k) {
            const double e = static_cast<double>(x[k]) - q[k];
            s += e * e;
        }
        return s;
    }

    // One query's products V (n values, rows t0..t0+n-1) -> their float32 slacks (in place);
    // returns how many of the balls hold the query. Vectorised: every row in float32 first,
    // then the few whose float32 verdict the rounding could flip (|v| <= e32) in float64.
    int64_t block(Part& p, float* V, int64_t n, int64_t t0, float e32, float qn, const double* q) {
        float* vb = room(p.vbuf, static_cast<size_t>(n));
        const float* off = u_.off32 + t0;
        const float* r2_32 = u_.r2_32 + t0;
        const float* r32 = u_.r32 + t0;
        int64_t c = ball_slacks(V, n, off, r2_32, r32, e32, qn, vb);
        const int64_t k = in_band(vb, n, -e32, e32, room(p.hits, static_cast<size_t>(n)));
        for (int64_t h = 0; h < k; ++h) {  // the rounding could flip these: float64
            const int64_t t = t0 + p.hits[h];
            c += u_.r2[t] > d2(q, t);
        }
        return c;
    }
};

}  // namespace guard
