"""Benchmark: what the guard's default abstention score costs per image, next to the rest of the
geometry and to the peers, measured in the same run.

    python bench/ood.py [--quick] [--out-dir bench/results]

Single-threaded. Data: the default artifact (54,000 Fashion-MNIST training features, fitted first
if missing); queries: the features of Fashion-MNIST test images and handwritten digits, scored
in one batch. Per image (median [min, max] over repeats):

* the default score's own work given the geometry: its two certified hull distances in the
  half-whitened spherical spaces (transform, normalise,
  :class:`~guard.geometry.hull.ConvexHullIndex` query each), the low-activation tail (a
  binary search per unit), fDBD from the exact margins, the normal transforms and the maximum;
* the same inside the guard: its two hulls in the guard's shared passes
  (``HullPair.query_all`` with and without them, the difference), then the rest given them;
  and the two hulls alone against added to the shared passes at batches of 8;
* what the guard computes anyway: the raw and spherical hull distances and the exact margins
  (the default score reads the margins and the raw hull distance); the union of learned regions;
* everything: ``Guard.score_features`` (geometry, default score, p-value);
* the peers' scores on the same features: deep-kNN (k = 50 over all training features), ViM,
  Mahalanobis, fDBD, Energy, MSP; and the previous default's combination given the geometry
  (its own work was the spherical hull query and that combination).

The default and the previous default are fitted here (this code's defaults, on the queries' own
geometry, for timing only), so the numbers are those of this code whatever score the artifact
stores.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss

from bench.common import stats, write_results
from guard.detectors import MIN_CALIB, REGISTRY, CombinedScore, Evidence, to_sphere
from guard.evaluation import sets as evalsets
from guard.geometry.margins import compute_margins

faiss.omp_set_num_threads(1)

PEERS = ("knn", "vim", "mahalanobis", "fdbd", "energy", "msp")


def _ms_per_image(fn, n: int, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3 / n)
    return stats(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer queries and repeats")
    ap.add_argument("--artifact", default="artifacts/fmnist_resnet")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args(argv)
    from guard.defaults import default_guard

    guard = default_guard(Path(args.artifact), progress=False, device="cpu")
    if guard.ood_ is None:
        raise SystemExit(f"{args.artifact} has no abstention score (fitted with ood=False)")
    n = 32 if args.quick else 128
    repeats = 3 if args.quick else 5
    x = np.concatenate([evalsets.fmnist_test(n // 2, seed=0)[0], evalsets.digits(n // 2)])
    logits, F = guard.require_model().run(x)
    s = guard.score_features(F, logits)
    ev = Evidence.from_scores(s, F)
    Ft, y = guard.train_features_, guard.train_labels_
    # for timing only: this code's default and the previous default, fitted on the queries' own
    # geometry (repeated up to the score's minimum of calibration inputs); their values are unused
    calib = ev.take(np.arange(max(MIN_CALIB, n)) % n)
    default = CombinedScore().fit(Ft, y, guard.W_, guard.b_, calib)
    previous = CombinedScore(("sphere_hull", "vim", "mahalanobis", "fdbd"), "stouffer_or").fit(
        Ft, y, guard.W_, guard.b_, calib
    )
    peers = {p: REGISTRY[p]().fit(Ft, y, guard.W_, guard.b_) for p in PEERS}
    views = list(default.hull_views().values())
    with_views = guard.hulls_.query_all(F, guard.regions_, views, top_support=guard.top_support)
    ev_hulls = Evidence(
        **{k: getattr(ev, k) for k in ("features", "logits", "margins", "hull", "d_min", "sphere")},
        hulls={name: r.upper for name, r in zip(default.hull_views(), with_views[2], strict=True)},
    )
    t = {
        "guard's shared passes (raw + sphere hull + union)": _ms_per_image(
            lambda: guard.hulls_.query_all(F, guard.regions_, top_support=guard.top_support),
            n,
            repeats,
        ),
        "guard's shared passes with the default score's two hulls": _ms_per_image(
            lambda: guard.hulls_.query_all(F, guard.regions_, views, top_support=guard.top_support),
            n,
            repeats,
        ),
        "default score: combine, given the geometry and its hulls": _ms_per_image(
            lambda: default.score(ev_hulls), n, repeats
        ),
        "sphere hull (normalise + certified query)": _ms_per_image(
            lambda: guard.sphere_.query_directions(to_sphere(F)), n, repeats
        ),
        "default score: combine, given the geometry": _ms_per_image(
            lambda: default.score(ev), n, repeats
        ),
        "raw hull (certified query)": _ms_per_image(
            lambda: guard.hull_.query(F, top_support=guard.top_support), n, repeats
        ),
        "exact margins": _ms_per_image(
            lambda: compute_margins(F, guard.W_, guard.b_, guard.nonneg_), n, repeats
        ),
        "union of learned regions": _ms_per_image(lambda: guard.regions_.query(F), n, repeats),
        "Guard.score_features (everything)": _ms_per_image(
            lambda: guard.score_features(F, logits), n, repeats
        ),
        "previous default: combine, given the geometry": _ms_per_image(
            lambda: previous.score(ev), n, repeats
        ),
    }
    for p, det in peers.items():
        t[f"peer {p}"] = _ms_per_image(lambda det=det: det.score(ev), n, repeats)
    # at the batch size a served guard typically merges (8): the same queries, 8 per call
    small = [slice(lo, lo + 8) for lo in range(0, n, 8)]
    t["batches of 8: shared passes (raw + sphere hull + union)"] = _ms_per_image(
        lambda: [
            guard.hulls_.query_all(F[s], guard.regions_, top_support=guard.top_support)
            for s in small
        ],
        n,
        repeats,
    )
    t["batches of 8: shared passes with the default score's two hulls"] = _ms_per_image(
        lambda: [
            guard.hulls_.query_all(F[s], guard.regions_, views, top_support=guard.top_support)
            for s in small
        ],
        n,
        repeats,
    )
    t["batches of 8: the default score's two hulls alone"] = _ms_per_image(
        lambda: [v.query(F[s]) for s in small for v in views], n, repeats
    )
    default_cost = t["default score: combine, given the geometry"]["median"]
    in_guard = (
        t["guard's shared passes with the default score's two hulls"]["median"]
        - t["guard's shared passes (raw + sphere hull + union)"]["median"]
        + t["default score: combine, given the geometry and its hulls"]["median"]
    )
    previous_cost = (
        t["sphere hull (normalise + certified query)"]["median"]
        + t["previous default: combine, given the geometry"]["median"]
    )
    small_alone = t["batches of 8: the default score's two hulls alone"]["median"]
    small_added = (
        t["batches of 8: shared passes with the default score's two hulls"]["median"]
        - t["batches of 8: shared passes (raw + sphere hull + union)"]["median"]
    )
    raw = t["raw hull (certified query)"]["median"]
    sphere = t["sphere hull (normalise + certified query)"]["median"]
    total = t["Guard.score_features (everything)"]["median"]
    knn = t["peer knn"]["median"]
    rows = [
        {"what": k, "ms per image": v, "share of score_features": v["median"] / total}
        for k, v in t.items()
    ]
    summary = {
        "default score's own cost in the guard (its two hulls added to the shared passes + "
        "low tail + combine), ms/image": f"{in_guard:.3f}",
        "default score's own cost alone (two hull queries + low tail + combine), ms/image": (
            f"{default_cost:.3f}"
        ),
        "alone / in the guard (same run)": f"{default_cost / in_guard:.2f}x",
        "batches of 8: the two hulls alone / added to the shared passes (same run)": (
            f"{small_alone / small_added:.2f}x ({small_alone:.3f} vs {small_added:.3f} ms/image)"
        ),
        "previous default's own cost (sphere query + combine), ms/image": f"{previous_cost:.3f}",
        "default in the guard / previous default's own cost (same run)": (
            f"{in_guard / previous_cost:.2f}x"
        ),
        "sphere query / raw hull query (same run)": f"{sphere / raw:.2f}x",
        "default score's own cost in the guard / score_features": f"{in_guard / total:.2f}",
        "default score's own cost in the guard / deep-kNN (k=50, all points)": (
            f"{in_guard / knn:.2f}x"
        ),
    }
    for r in rows:
        print(r, flush=True)
    print(summary)
    write_results(
        "ood",
        rows,
        args.out_dir,
        title="Cost per image of the default abstention score (and the rest of the geometry)",
        summary=summary,
        config={
            "quick": args.quick,
            "queries": n,
            "batch": n,
            "N": len(Ft),
            "d": int(Ft.shape[1]),
            "default components": list(default.names),
            "default combine": default.combine,
            "artifact's stored score": repr(guard.ood_),
        },
        notes=[
            "one batch of all queries per call, one thread; ms per image = call time / queries.",
            "The default score reads the exact margins and the raw hull distance, which the "
            "guard computes anyway (outputs); its own work is two hull queries in the "
            "half-whitened spherical spaces, the low-activation tail and the combination.",
            "In the guard its two hulls ride on the passes the guard makes over the training "
            "features anyway (HullPair.query_all); their cost there is the shared passes with "
            "them minus without them. Alone (a CombinedScore scored without the guard's "
            "hulls) each hull makes its own passes.",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
