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

class UnionScan {
  public:
    UnionScan(const UnionData& u, const Blas& blas) : u_(u), blas_(blas) {}

    void run(const float* Q, int64_t M, UnionOut out) {
        constexpr int CH = 64;  // queries per GEMM
        for (int64_t lo = 0; lo < M; lo += CH) {
            const int nq = static_cast<int>(std::min<int64_t>(CH, M - lo));
            chunk(Q + lo * u_.d, nq, out, lo);
        }
    }

  private:
    UnionData u_;
    Blas blas_;
    std::vector<float> buf_;

    double d2(const double* q, int64_t t) const {
        const float* x = u_.T + t * u_.d;
        double s = 0.0;
        for (int k = 0; k < u_.d; ++k) {
            const double e = static_cast<double>(x[k]) - q[k];
            s += e * e;
        }
        return s;
    }

    void chunk(const float* Q, int nq, UnionOut out, int64_t base) {
        const int d = u_.d;
        const double gamma = d * U32 / (1 - d * U32);
        std::vector<double> q64(static_cast<size_t>(nq) * d), err(nq), tolc(nq), mag(nq);
        std::vector<float> qn32(nq), err32(nq), top(nq, -INFINITY), cut(nq, -INFINITY);
        std::vector<int64_t> count(nq, 0);
        std::vector<std::vector<int64_t>> cand(nq);
        std::vector<std::vector<float>> cand_v(nq);
        for (int i = 0; i < nq; ++i) {
            double qn = 0.0;
            for (int k = 0; k < d; ++k) {
                const double v = static_cast<double>(Q[static_cast<size_t>(i) * d + k]);
                q64[static_cast<size_t>(i) * d + k] = v;
                qn += v * v;
            }
            qn32[i] = static_cast<float>(qn);
            const double qx = std::sqrt(qn) * u_.max_norm;
            err[i] = (2.0 * gamma * qx + 4.0 * U32 * (u_.big + 2.0 * qx + qn)) * 1.01 + 1e-30;
            err32[i] = static_cast<float>(err[i]);
            mag[i] = std::sqrt(qn) + u_.max_norm + u_.r_max;
        }
        auto tol = [&](int i, float t) {
            return (2.0 * std::sqrt(err[i]) + 8.0 * U32 * (mag[i] + std::abs(static_cast<double>(t)))) * 1.01;
        };
        const int64_t BL = std::max<int64_t>(256, (int64_t{1} << 15) / nq);
        if (buf_.size() < static_cast<size_t>(nq) * BL) buf_.resize(static_cast<size_t>(nq) * BL);
        for (int64_t t0 = 0; t0 < u_.N; t0 += BL) {
            const int64_t n = std::min(BL, u_.N - t0);
            rows_times_rows(blas_, u_.T + t0 * d, static_cast<int>(n), Q, nq, d, buf_.data());
            for (int i = 0; i < nq; ++i) {
                float* V = buf_.data() + static_cast<int64_t>(i) * n;
                const float e32 = err32[i], qn = qn32[i];
                int64_t c = 0;
                float bm = -INFINITY;
                for (int64_t j = 0; j < n; ++j) {
                    const int64_t t = t0 + j;
                    float v = V[j] * 2.0f;
                    v = v + u_.off32[t];
                    v = v - qn;
                    bool in = v > e32;
                    if (!in && v >= -e32)  // the rounding could flip it: float64
                        in = u_.r2[t] > d2(&q64[static_cast<size_t>(i) * d], t);
                    c += in;
                    // slack r - |q - t| in float32 (-inf for huge balls: off32 = -inf)
                    float w = u_.r2_32[t] - v;
                    w = w > 0.0f ? w : 0.0f;
                    w = std::sqrt(w);
                    w = u_.r32[t] - w;
                    V[j] = w;
                    bm = std::max(bm, w);
                }
                count[i] += c;
                if (bm > top[i]) {
                    top[i] = bm;
                    cut[i] = static_cast<float>(static_cast<double>(bm) - tol(i, bm));
                }
                if (bm >= cut[i])
                    for (int64_t j = 0; j < n; ++j)
                        if (V[j] >= cut[i]) cand[i].push_back(t0 + j), cand_v[i].push_back(V[j]);
            }
        }
        for (int i = 0; i < nq; ++i) {
            const double* q = &q64[static_cast<size_t>(i) * d];
            const float fcut = static_cast<float>(static_cast<double>(top[i]) - tol(i, top[i]));
            double best = -INFINITY;
            int64_t best_t = -1;
            auto consider = [&](int64_t t) {
                const double s = u_.r[t] - std::sqrt(d2(q, t));
                if (s > best || (s == best && t < best_t)) best = s, best_t = t;
            };
            for (size_t j = 0; j < cand[i].size(); ++j)
                if (cand_v[i][j] >= fcut) consider(cand[i][j]);
            for (int64_t h = 0; h < u_.n_huge; ++h) {  // huge balls: exactly, in float64
                const int64_t t = u_.huge[h];
                count[i] += u_.r2[t] > d2(q, t);
                consider(t);
            }
            out.n_balls[base + i] = count[i];
            out.in_union[base + i] = count[i] > 0;
            out.slack[base + i] = best;
            out.best[base + i] = best_t;
        }
    }
};

}  // namespace guard
