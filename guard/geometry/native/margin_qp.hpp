// The margin QP of one class pair (eq. 9 s.t. 7, 8, 10; guard/geometry/qp.py) by the dual
// active-set method of Goldfarb and Idnani ("A numerically stable dual method for solving
// strictly convex quadratic programs", Math. Programming 27, 1983), with the identity Hessian:
// in u = y - x the problem is the least-distance program
//
//     min 1/2 |u|^2   s.t.   -a_0.u >= s_0        (the i|j boundary, kept active: an equality)
//                             a_k.u >= -s_k       (i stays on top of every other class k)
//                             u_l   >= -x_l       (y >= 0, ReLU features only)
//
// with a_k = w_i - w_k and s_k = z_i - z_k >= 0 (i is the argmax). u = 0 satisfies every
// inequality, so the method starts there, adds the boundary first (its full step is the
// closed-form foot point), then the most violated constraint until none is; a constraint whose
// multiplier would turn negative leaves the active set. Few constraints are active at the
// optimum (on ReLU features: the boundary, one or two classes and a few bounds y_l = 0), so the
// method keeps the Cholesky factor of the active normals' Gram matrix G = N^T N (q x q) rather
// than an orthogonal f x f basis: adding a constraint costs O(q f + q^2), and the step
// directions are r = G^-1 N^T n (dual) and z = n - N r (primal).
//
// Every solve ends with its multipliers; the dual bound (lam.h - |N lam|^2 / 2 with the
// inequalities' multipliers clipped at 0, a lower bound of |u*|^2 / 2 for any such lam) is the
// certificate: gap = |u| - sqrt(2 dual). A solve that does not end cleanly (iteration cap, a
// final point that violates a constraint, a gap above 1e-9 (1 + |u|), an unreachable boundary)
// reports so, and the caller solves that pair with the reference path (DAQP, then NNLS), which
// also decides every unreachable boundary.
#pragma once

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace guard {

enum class MarginStatus : int8_t { ok = 0, unreachable = 1, failed = 2 };

struct MarginResult {
    double d = 0.0;    // |u| = distance to the boundary
    double gap = 0.0;  // |u| - dual lower bound
    int steps = 0;     // changes of the active set (1: the closed-form foot point was the answer)
    MarginStatus status = MarginStatus::failed;
};

class MarginQP {
  public:
    // W (n x f) row-major float64, b (n). One solver per thread; reused across solves.
    MarginQP(const double* W, const double* b, int n, int f, bool nonneg)
        : W_(W), b_(b), n_(n), f_(f), nonneg_(nonneg) {
        u_.resize(f);
        z_.resize(f);
        np_.resize(f);
        nk_.resize(f);
        Wu_.resize(n);
        s_.resize(n);
        wn_.resize(n);
        on_.resize(n + f);
    }

    // The i|j margin of x (f) with logits z (n, float64, z = W x + b). y (f) gets x + u.
    MarginResult solve(const double* x, const double* z, int i, int j, double* y) {
        MarginResult out;
        const int f = f_;
        i_ = i;
        j_ = j;
        x_ = x;
        plam_ = 0.0;
        for (int k = 0; k < n_; ++k) {
            s_[k] = z[i] - z[k];
            double nn = 0.0;
            for (int l = 0; l < f; ++l) {
                const double a = W_[idx(i, l)] - W_[idx(k, l)];
                nn += a * a;
            }
            wn_[k] = std::sqrt(nn);
        }
        double xmax = 0.0, zmax = 0.0;
        for (int l = 0; l < f; ++l) xmax = std::max(xmax, std::abs(x[l]));
        for (int k = 0; k < n_; ++k) zmax = std::max(zmax, std::abs(z[k]));
        // a constraint counts as violated beyond these (far inside margins.py's 1e-9 checks)
        tol_class_ = 1e-12 * (1.0 + zmax);
        tol_bound_ = 1e-12 * (1.0 + xmax);
        std::fill(u_.begin(), u_.end(), 0.0);
        std::fill(on_.begin(), on_.end(), 0);
        act_.clear();
        lam_.clear();
        G_.clear();
        L_.clear();
        q_ = 0;
        if (wn_[j] == 0.0) return out;  // w_i = w_j: the reference path decides
        const int max_iter = 4 * (n_ + f) + 50;  // (and at most kMaxActive active constraints)
        int p = kEq;  // the boundary first
        for (int it = 0; it < max_iter; ++it) {
            if (p == kNone) {
                p = most_violated();
                if (p == kNone) {
                    out = finish(y);
                    out.steps = it;
                    return out;
                }
            }
            const int st = add(p);
            if (st == 1) {
                out.status = MarginStatus::unreachable;
                return out;
            }
            if (st == 2) return out;  // numerical trouble
            if (st == 0) p = kNone;   // added; else (3): a constraint left, p again
        }
        return out;
    }

  private:
    // Constraint codes: the boundary kEq, class k as k (k != i, j), the bound y_l >= 0 as n + l.
    static constexpr int kEq = -2;
    static constexpr int kNone = -1;
    // More active constraints than this: handed back (each step costs O(q^2) here, a drop
    // O(q^3); DAQP's bound handling wins there: 0.4-0.6x at 512 sparse ReLU features, where
    // hundreds of bounds y_l >= 0 become active, against 1.2-3x at 64 features with ~8).
    static constexpr int kMaxActive = 40;
    const double* W_;
    const double* b_;
    int n_, f_;
    bool nonneg_;
    int i_ = 0, j_ = 0;
    const double* x_ = nullptr;
    std::vector<double> u_, z_, np_, nk_, Wu_, s_, wn_;
    std::vector<char> on_;
    std::vector<int> act_;
    std::vector<double> lam_;
    std::vector<double> G_, L_;  // Gram matrix of the active normals and its Cholesky factor,
                                 // row-major with row stride cap_
    std::vector<double> v_, r_;
    int q_ = 0, cap_ = 0;
    double plam_ = 0.0;  // multiplier of the constraint being added
    double tol_class_ = 0.0, tol_bound_ = 0.0;

    size_t idx(int k, int l) const { return static_cast<size_t>(k) * f_ + l; }

    // Normal n_p (f) and right-hand side h_p of constraint p (n_p.u >= h_p).
    double normal(int p, double* nv) const {
        const int f = f_;
        if (p == kEq) {
            for (int l = 0; l < f; ++l) nv[l] = W_[idx(j_, l)] - W_[idx(i_, l)];
            return s_[j_];
        }
        if (p < n_) {
            for (int l = 0; l < f; ++l) nv[l] = W_[idx(i_, l)] - W_[idx(p, l)];
            return -s_[p];
        }
        std::fill(nv, nv + f, 0.0);
        nv[p - n_] = 1.0;
        return -x_[p - n_];
    }

    // n_a . nv for an active constraint a (nv: a dense normal).
    double dot_normal(int a, const double* nv) const {
        if (a >= n_) return nv[a - n_];
        const int f = f_;
        const int hi = a == kEq ? j_ : i_, lo = a == kEq ? i_ : a;
        double s = 0.0;
        for (int l = 0; l < f; ++l) s += (W_[idx(hi, l)] - W_[idx(lo, l)]) * nv[l];
        return s;
    }

    // v += c n_a
    void axpy_normal(int a, double c, double* v) const {
        if (a >= n_) {
            v[a - n_] += c;
            return;
        }
        const int f = f_;
        const int hi = a == kEq ? j_ : i_, lo = a == kEq ? i_ : a;
        for (int l = 0; l < f; ++l) v[l] += c * (W_[idx(hi, l)] - W_[idx(lo, l)]);
    }

    // The inactive constraint violated most (in distance units), or kNone when none is.
    int most_violated() {
        const int f = f_;
        int best = kNone;
        double worst = 0.0;
        for (int k = 0; k < n_; ++k) {  // W u, then (w_i - w_k).u = Wu_i - Wu_k
            double a = 0.0;
            for (int l = 0; l < f; ++l) a += W_[idx(k, l)] * u_[l];
            Wu_[k] = a;
        }
        for (int k = 0; k < n_; ++k) {
            if (k == i_ || k == j_ || on_[k] || wn_[k] == 0.0) continue;
            const double v = (Wu_[i_] - Wu_[k]) + s_[k];  // >= 0 when satisfied
            if (v < -tol_class_ && v / wn_[k] < worst) worst = v / wn_[k], best = k;
        }
        if (nonneg_)
            for (int l = 0; l < f; ++l) {
                if (on_[n_ + l]) continue;
                const double v = u_[l] + x_[l];
                if (v < -tol_bound_ && v < worst) worst = v, best = n_ + l;
            }
        return best;
    }

    void reserve(int q) {
        if (q <= cap_) return;
        const int cap = std::max(2 * cap_, std::max(q, 16));
        std::vector<double> G(static_cast<size_t>(cap) * cap), L(static_cast<size_t>(cap) * cap);
        for (int r = 0; r < q_; ++r)
            for (int c = 0; c < q_; ++c) {
                G[static_cast<size_t>(r) * cap + c] = G_[static_cast<size_t>(r) * cap_ + c];
                L[static_cast<size_t>(r) * cap + c] = L_[static_cast<size_t>(r) * cap_ + c];
            }
        G_.swap(G);
        L_.swap(L);
        cap_ = cap;
        v_.resize(cap);
        r_.resize(cap);
    }
    double& G(int r, int c) { return G_[static_cast<size_t>(r) * cap_ + c]; }
    double& L(int r, int c) { return L_[static_cast<size_t>(r) * cap_ + c]; }

    // r = G^-1 v (q x q, by the Cholesky factor L L^T)
    void chol_solve(const double* v, double* r) {
        for (int k = 0; k < q_; ++k) {
            double a = v[k];
            for (int c = 0; c < k; ++c) a -= L(k, c) * r[c];
            r[k] = a / L(k, k);
        }
        for (int k = q_ - 1; k >= 0; --k) {
            double a = r[k];
            for (int c = k + 1; c < q_; ++c) a -= L(c, k) * r[c];
            r[k] = a / L(k, k);
        }
    }

    // One step of adding constraint p: 0 added, 1 infeasible (the boundary cannot be reached),
    // 2 numerical trouble, 3 a blocking constraint left the active set (call again with p).
    int add(int p) {
        const int f = f_;
        reserve(q_ + 1);
        const double h = normal(p, np_.data());
        double nn = 0.0, slack = -h;
        for (int l = 0; l < f; ++l) nn += np_[l] * np_[l], slack += np_[l] * u_[l];
        // v = N^T n, r = G^-1 v (dual direction), z = n - N r (primal direction)
        for (int k = 0; k < q_; ++k) v_[k] = dot_normal(act_[k], np_.data());
        chol_solve(v_.data(), r_.data());
        std::copy(np_.begin(), np_.end(), z_.begin());
        for (int k = 0; k < q_; ++k) axpy_normal(act_[k], -r_[k], z_.data());
        // partial step: the first active inequality whose multiplier reaches 0
        double t1 = INFINITY;
        int drop = -1;
        for (int k = 0; k < q_; ++k) {
            if (act_[k] == kEq || r_[k] <= 0.0) continue;
            const double t = lam_[k] / r_[k];
            if (t < t1) t1 = t, drop = k;
        }
        // full step: the constraint becomes active
        double zn = 0.0, zz = 0.0;
        for (int l = 0; l < f; ++l) zn += z_[l] * np_[l], zz += z_[l] * z_[l];
        const bool z_zero = std::sqrt(zz) <= 1e-12 * std::sqrt(nn);
        const double t2 = z_zero || !(zn > 0.0) ? INFINITY : std::max(-slack, 0.0) / zn;
        const double t = std::min(t1, t2);
        if (!std::isfinite(t)) return 1;  // no step in either space: infeasible
        if (std::isfinite(t2))
            for (int l = 0; l < f; ++l) u_[l] += t * z_[l];
        for (int k = 0; k < q_; ++k) lam_[k] -= t * r_[k];
        plam_ += t;
        if (t == t2) return q_ < kMaxActive && append(p, nn) ? 0 : 2;
        remove(drop);
        return 3;
    }

    // p joins: G gets the row and column (v, |n|^2), L its new row.
    bool append(int p, double nn) {
        const int q = q_;
        for (int k = 0; k < q; ++k) G(q, k) = G(k, q) = v_[k];
        G(q, q) = nn;
        double rest = nn;
        for (int k = 0; k < q; ++k) {
            double a = v_[k];
            for (int c = 0; c < k; ++c) a -= L(k, c) * L(q, c);
            L(q, k) = a / L(k, k);
            rest -= L(q, k) * L(q, k);
        }
        if (!(rest > 1e-20 * nn)) return false;  // dependent normals
        L(q, q) = std::sqrt(rest);
        act_.push_back(p);
        lam_.push_back(plam_);
        if (p >= 0) on_[p] = 1;
        plam_ = 0.0;
        ++q_;
        return true;
    }

    // The active constraint at position k leaves: G loses its row and column, L is rebuilt.
    void remove(int k) {
        const int q = q_;
        if (act_[k] >= 0) on_[act_[k]] = 0;
        for (int r = 0; r < q; ++r)
            for (int c = k; c + 1 < q; ++c) G(r, c) = G(r, c + 1);
        for (int r = k; r + 1 < q; ++r)
            for (int c = 0; c + 1 < q; ++c) G(r, c) = G(r + 1, c);
        act_.erase(act_.begin() + k);
        lam_.erase(lam_.begin() + k);
        q_ = q - 1;
        for (int r = 0; r < q_; ++r) {  // Cholesky of the smaller G (q is small)
            for (int c = 0; c <= r; ++c) {
                double a = G(r, c);
                for (int m = 0; m < c; ++m) a -= L(r, m) * L(c, m);
                L(r, c) = r == c ? std::sqrt(std::max(a, 1e-300)) : a / L(c, c);
            }
        }
    }

    // The optimum: y = x + u, its distance, the dual bound from the multipliers, and a last
    // check that y satisfies every constraint.
    MarginResult finish(double* y) {
        MarginResult out;
        const int f = f_;
        // g = sum lam_k n_k, dual = lam.h - |g|^2 / 2 (inequality multipliers clipped at 0)
        std::vector<double>& g = z_;
        std::fill(g.begin(), g.end(), 0.0);
        double lh = 0.0;
        for (int k = 0; k < q_; ++k) {
            const double lam = act_[k] == kEq ? lam_[k] : std::max(lam_[k], 0.0);
            if (lam == 0.0) continue;
            lh += lam * normal(act_[k], nk_.data());
            axpy_normal(act_[k], lam, g.data());
        }
        double gg = 0.0, uu = 0.0;
        for (int l = 0; l < f; ++l) gg += g[l] * g[l], uu += u_[l] * u_[l];
        const double dual = lh - 0.5 * gg;
        out.d = std::sqrt(uu);
        out.gap = std::max(out.d - std::sqrt(std::max(2.0 * dual, 0.0)), 0.0);
        for (int l = 0; l < f; ++l) y[l] = x_[l] + u_[l];
        // feasibility, at the scales margins.py checks with (1e-9 relative): y on the boundary,
        // i on top of every class, y >= 0
        for (int k = 0; k < n_; ++k) {
            double a = 0.0;
            for (int l = 0; l < f; ++l) a += W_[idx(k, l)] * u_[l];
            Wu_[k] = a;
        }
        const double on_boundary = std::abs((Wu_[i_] - Wu_[j_]) + s_[j_]);
        bool ok = on_boundary <= 1e3 * tol_class_ * (1.0 + out.d * wn_[j_]);
        for (int k = 0; k < n_ && ok; ++k)
            if (k != i_ && (Wu_[i_] - Wu_[k]) + s_[k] < -1e3 * tol_class_ * (1.0 + out.d * wn_[k]))
                ok = false;
        if (nonneg_)
            for (int l = 0; l < f && ok; ++l)
                if (y[l] < -1e3 * tol_bound_) ok = false;
        // and a certificate as tight as the reference path's (else its multipliers are off)
        ok = ok && out.gap <= 1e-9 * (1.0 + out.d);
        out.status = ok ? MarginStatus::ok : MarginStatus::failed;
        return out;
    }
};

}  // namespace guard
