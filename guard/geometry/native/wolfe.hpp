// Minimum-norm point of the convex hull of a few points (the hull distance's inner QP, eq. 21-22),
// by Wolfe's algorithm (P. Wolfe, "Finding the nearest point in a polytope", Math. Programming
// 11, 1976): a primal active-set method that terminates finitely with the exact support (the
// "corral"), warm-startable from the previous support when points are added.
//
// The affine minimiser of the corral C is mu = M^-1 1 / (1^T M^-1 1) with M = 1 1^T + P_C P_C^T;
// M = R^T R is kept as an upper-triangular Cholesky factor, updated in O(|C|^2) when a point joins
// (one triangular solve) and when one leaves (Givens rotations), never refactorised.
//
// Nothing certified depends on this solver: its point p is a convex combination of training
// points whatever the rounding (so ||q - p|| is a true upper bound), and the lower bound comes
// from the full scan. Its accuracy only decides how fast the gap closes.
#pragma once

#include <vector>

#include "kernels.hpp"

namespace guard {

class Wolfe {
  public:
    // Points are rows of P (m x d, row-major, shifted so the query is the origin); their squared
    // norms in Pn. The corral is a list of row positions of P.
    std::vector<int> corral;
    std::vector<double> lam;  // weights of the corral's points (> 0, sum 1)
    std::vector<double> x;    // sum lam_c P_c: the current point (d)
    int d = 0;

    void reset(int dim) {
        d = dim;
        corral.clear();
        lam.clear();
        x.assign(d, 0.0);
        n_cap = 0;
        R.clear();
    }

    bool started() const { return !corral.empty(); }

    // Row positions were renumbered (the working set was pruned): pos[old] = new position.
    void renumber(const std::vector<int>& pos) {
        for (int& c : corral) c = pos[c];
    }

    // Solve on the m rows of P, warm from the current corral. Returns the major cycles used.
    int solve(const double* P, const double* Pn, int m) {
        if (corral.empty()) {
            int j0 = 0;
            for (int i = 1; i < m; ++i)
                if (Pn[i] < Pn[j0]) j0 = i;
            grow(8);
            corral.push_back(j0);
            lam.assign(1, 1.0);
            at(0, 0) = std::sqrt(1.0 + Pn[j0]);
        }
        double pmax = 0.0;
        for (int i = 0; i < m; ++i) pmax = std::max(pmax, Pn[i]);
        set_x(P);
        const int max_major = 4 * (m + d) + 50;
        int major = 0;
        std::vector<double>& b = b_;
        std::vector<double>& r = r_;
        for (; major < max_major; ++major) {
            // pricing: the point most opposite to x
            const double xx = dot(x.data(), x.data(), d);
            int j = -1;
            double best = INFINITY;
            px.resize(m);
            rows_dot64(P, m, d, x.data(), px.data());
            for (int i = 0; i < m; ++i)
                if (px[i] < best) best = px[i], j = i;
            if (j < 0 || xx - best <= 1e-12 * pmax) break;  // optimal
            if (std::find(corral.begin(), corral.end(), j) != corral.end()) break;
            // j joins: new column [r; rho] of R with R^T r = 1 + P_C P_j
            const int n = static_cast<int>(corral.size());
            b.resize(n);
            const double* pj = P + static_cast<int64_t>(j) * d;
            for (int c = 0; c < n; ++c) b[c] = 1.0 + dot(P + static_cast<int64_t>(corral[c]) * d, pj, d);
            r.resize(n);
            forward(b.data(), r.data(), n);
            const double rho2 = 1.0 + Pn[j] - dot(r.data(), r.data(), n);
            if (!(rho2 > 1e-12 * (1.0 + Pn[j]))) break;  // affinely dependent: no progress
            grow(n + 1);
            for (int c = 0; c < n; ++c) at(c, n) = r[c];
            at(n, n) = std::sqrt(rho2);
            corral.push_back(j);
            lam.push_back(0.0);
            const bool moved = minor(P);
            set_x(P);
            if (!moved) break;
        }
        set_x(P);
        return major;
    }

  private:
    std::vector<double> R;  // column-major n_cap x n_cap, upper triangular
    std::vector<double> px;  // scratch: P x
    std::vector<double> b_, r_, ones_, z_, u_;  // scratch of solve() and minor()
    int n_cap = 0;

    double& at(int i, int j) { return R[static_cast<size_t>(j) * n_cap + i]; }

    void grow(int n) {
        if (n <= n_cap) return;
        const int cap = std::max(n, 2 * n_cap);
        std::vector<double> R2(static_cast<size_t>(cap) * cap, 0.0);
        const int used = static_cast<int>(corral.size());
        for (int j = 0; j < used; ++j)
            for (int i = 0; i <= j; ++i) R2[static_cast<size_t>(j) * cap + i] = at(i, j);
        R.swap(R2);
        n_cap = cap;
    }

    // R^T z = b (R upper triangular, so R^T is lower)
    void forward(const double* b, double* z, int n) {
        for (int i = 0; i < n; ++i) {
            const double* col = &R[static_cast<size_t>(i) * n_cap];
            z[i] = (b[i] - dot(col, z, i)) / col[i];
        }
    }

    // R u = z
    void backward(const double* z, double* u, int n) {
        for (int i = n - 1; i >= 0; --i) {
            double s = z[i];
            for (int k = i + 1; k < n; ++k) s -= at(i, k) * u[k];
            u[i] = s / at(i, i);
        }
    }

    void set_x(const double* P) {
        std::fill(x.begin(), x.end(), 0.0);
        for (size_t c = 0; c < corral.size(); ++c)
            axpy(lam[c], P + static_cast<int64_t>(corral[c]) * d, x.data(), d);
    }

    // Drop corral member k: delete column k of R and restore the triangle by Givens rotations.
    void remove(int k) {
        const int n = static_cast<int>(corral.size());
        for (int j = k; j < n - 1; ++j)
            for (int i = 0; i <= j + 1; ++i) at(i, j) = at(i, j + 1);
        for (int j = k; j < n - 1; ++j) {
            const double a = at(j, j), b = at(j + 1, j);
            const double h = std::hypot(a, b);
            const double c = a / h, s = b / h;
            for (int l = j; l < n - 1; ++l) {
                const double t1 = at(j, l), t2 = at(j + 1, l);
                at(j, l) = c * t1 + s * t2;
                at(j + 1, l) = -s * t1 + c * t2;
            }
        }
        corral.erase(corral.begin() + k);
        lam.erase(lam.begin() + k);
    }

    // Minor cycles: move to the affine minimiser of the corral, dropping points whose weight
    // would turn negative. False when no progress is possible (numerically optimal).
    bool minor(const double* P) {
        std::vector<double>& ones = ones_;
        std::vector<double>& z = z_;
        std::vector<double>& u = u_;
        for (int guard_it = 0; guard_it < 1000; ++guard_it) {
            const int n = static_cast<int>(corral.size());
            ones.assign(n, 1.0);
            z.resize(n);
            u.resize(n);
            forward(ones.data(), z.data(), n);
            backward(z.data(), u.data(), n);
            double su = 0.0;
            for (int i = 0; i < n; ++i) su += u[i];
            if (!(su > 0) || !std::isfinite(su)) return false;
            bool all_pos = true;
            for (int i = 0; i < n; ++i) {
                u[i] /= su;
                if (!(u[i] > 1e-15)) all_pos = false;
            }
            if (all_pos) {
                lam.assign(u.begin(), u.end());
                return true;
            }
            // step from lam towards mu until the first weight reaches 0
            double theta = 1.0;
            int first = -1;
            for (int i = 0; i < n; ++i)
                if (!(u[i] > 1e-15)) {
                    const double den = lam[i] - u[i];
                    const double t = den > 0 ? lam[i] / den : 0.0;
                    if (t < theta || first < 0) theta = std::min(theta, t), first = i;
                }
            if (first == n - 1 && theta <= 0.0) {  // the new point cannot enter: optimal
                remove(n - 1);
                return false;
            }
            double total = 0.0;
            for (int i = 0; i < n; ++i) {
                lam[i] = theta * u[i] + (1.0 - theta) * lam[i];
                if (i == first || !(lam[i] > 1e-15)) lam[i] = 0.0;
                total += lam[i];
            }
            for (int i = n - 1; i >= 0; --i)
                if (lam[i] == 0.0) remove(i);
            if (corral.empty() || !(total > 0)) return false;
            for (double& l : lam) l /= total;
        }
        return false;
    }
};

}  // namespace guard
