"""Compute everything a report shows for a fitted guard and write it: Markdown, JSON, PNGs."""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...version import __version__
from ..ood import COMBINED, METHODS, SetScores, Setup, metric_rows, shift_report
from . import figures
from .data import ReportData, check_against
from .facts import geometry_facts, margin_table, pixel_hull, same_label_share
from .render import render

log = logging.getLogger(__name__)


def build_report(
    guard,
    data: ReportData,
    out: str | Path,
    *,
    n_calib: int = 2000,
    n_pixel: int = 300,
    n_show: int = 8,
    includes: tuple[str, ...] = (),
    command: str = "",
    seed: int = 0,
) -> Path:
    """Evaluate ``guard`` (a loaded artifact with its model) on ``data`` and write
    ``report.md``, ``report.json`` and the figures to ``out``. Returns the Markdown path."""
    t0 = time.perf_counter()
    if guard.model_ is None:
        raise InputError("the report runs the model: load the artifact with its ONNX model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_against(data, guard)
    includes_text = [_include(p) for p in includes]  # fail on a bad path before the long work
    n_classes = guard.W_.shape[0]
    if data.y_test.min() < 0 or data.y_test.max() >= n_classes:
        raise InputError(f"test labels must be class indices 0..{n_classes - 1}")

    labels = guard.train_labels_ if guard.train_labels_ is not None else guard.train_pred_
    ood = guard.ood_
    methods = METHODS if ood is not None else [m for m in METHODS if m != COMBINED]
    log.info("fitting the peers on the artifact's training features")
    setup = Setup(guard.model_, methods, guard, guard.train_features_, labels, ood)
    rate = guard.thresholds_.target_abstain_rate or 0.05
    held_out = np.setdiff1d(np.arange(len(data.x_train)), guard.train_index_)
    calibrated = bool(held_out.size) and n_calib > 0
    if calibrated:
        pick = np.sort(np.random.default_rng(seed).permutation(held_out)[:n_calib])
        setup.calibrate(data.x_train[pick], rate)
    s_id = setup.score(data.x_test, "test", geometry=True)
    s_ood = {name: setup.score(x, name, geometry=True) for name, x in data.ood.items()}
    res = metric_rows(setup, s_id, s_ood) if s_ood else {}

    S = s_id.require_geometry()
    doc: dict = {
        "data": data.name,
        "n_train": int(len(guard.train_index_)),
        "n_features": int(guard.W_.shape[1]),
        "n_classes": n_classes,
        "class_names": guard.class_names_,
        "rate": rate,
        "n_calib": int(len(held_out)),
        "calibrated": calibrated,
        "thresholds": guard.thresholds_.to_dict(),
    }
    doc["facts"] = {"test": geometry_facts(S, data.y_test)}
    for name, s in s_ood.items():
        doc["facts"][name] = geometry_facts(s.require_geometry(), None)
    doc["decisions"] = {
        name: _decision_rates(guard, s.require_geometry())
        for name, s in {"test": s_id, **s_ood}.items()
    }
    doc["ood"] = res

    # Hull support in feature space (all test inputs) vs pixel space (the first n_pixel).
    y_fit, pixel = data.y_train, None
    if y_fit is not None:
        n_pix = min(n_pixel, len(data.x_test))
        doc["support"] = {
            "feature_all": same_label_share(S.support_idx, S.support_alpha, y_fit, data.y_test)
        }
        if n_pix:
            t = time.perf_counter()
            hp = pixel_hull(data.x_train[guard.train_index_], data.x_test[:n_pix])
            pix_idx = np.where(
                hp.support_idx >= 0, guard.train_index_[np.maximum(hp.support_idx, 0)], -1
            )
            pixel = (pix_idx, hp.support_alpha)
            log.info(
                "  pixel-space hull of %d test images in %.0f s", n_pix, time.perf_counter() - t
            )
            doc["support"] |= {
                "n_pixel": n_pix,
                "feature": same_label_share(
                    S.support_idx[:n_pix], S.support_alpha[:n_pix], y_fit, data.y_test[:n_pix]
                ),
                "pixel": same_label_share(pix_idx, hp.support_alpha, y_fit, data.y_test[:n_pix]),
                "pixel_outside_hull": float(np.mean(hp.lower > 0)),
                "pixel_median_distance": float(np.median(hp.upper)),
                "pixel_converged": float(np.mean(hp.converged)),
            }
    doc["table1"] = margin_table(guard, S, 0, s_id.features[0])

    shift_text = ""
    if data.shift and calibrated:
        shift_text, doc["shift"] = shift_report(setup, data.shift)

    doc["figures"], doc["figures_left_out"] = _figures(guard, data, S, s_ood, out, n_show, pixel)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["command"] = command
    doc["environment"] = {
        "guard": __version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    md = render(doc, setup.methods, list(s_ood), shift_text, includes_text)
    (out / "report.json").write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n")
    path = out / "report.md"
    path.write_text(md)
    return path


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _include(path: str) -> tuple[str, str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--include: file not found: {p}")
    return str(p), p.read_text()


def _decision_rates(guard, s) -> dict[str, float]:
    d = guard.decide(s)
    return {
        "abstain": float(np.mean(d.abstain)),
        "adversarial": float(np.mean(d.adversarial)),
        "ambiguous": float(np.mean(s.ambiguity < guard.thresholds_.ambiguity)),
    }


def _figures(
    guard,
    data: ReportData,
    S,
    s_ood: dict[str, SetScores],
    out: Path,
    n_show: int,
    pixel: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """The figures written (name -> file) and those left out (name -> why)."""
    figs: dict[str, str] = {}
    left_out: dict[str, str] = {}
    radii = guard.radii_[np.isfinite(guard.radii_) & (guard.radii_ < 1e17)]
    sets = {"train (fitted; d_hull = 0)": {"d_min": radii}}
    if guard.calib_scores_ is not None:
        sets["held-out train"] = {
            "d_min": guard.calib_scores_["d_min"],
            "d_hull": guard.calib_scores_["hull"],
        }
    sets["test"] = {"d_min": S.d_min, "d_hull": S.hull_upper}
    for name, s in s_ood.items():
        g = s.require_geometry()
        sets[name] = {"d_min": g.d_min, "d_hull": g.hull_upper}
    figs["distances"] = figures.distances(sets, out / "distances.png")
    amb = {name: v["d_min"] - v["d_hull"] for name, v in sets.items() if "d_hull" in v}
    figs["ambiguity"] = figures.ambiguity(amb, out / "ambiguity.png")
    figs["plane"] = figures.plane(S.d_min, S.hull_upper, S.pred == data.y_test, out / "plane.png")
    why_not = figures.why_not_images(data.x_test.shape)
    if why_not is not None:
        left_out["extremes"] = left_out["support"] = why_not
    else:
        names = guard.class_names_
        titles = [
            f"#{i} {names[int(y)]} → {names[int(p)]}\nd_min {dm:.2f}  d_hull {dh:.2f}"
            for i, (y, p, dm, dh) in enumerate(zip(data.y_test, S.pred, S.d_min, S.hull_upper))
        ]
        order = np.argsort(S.ambiguity)
        figs["extremes"] = figures.extremes(
            data.x_test, titles, order, min(n_show, len(order)), out / "extremes.png"
        )
        y_train = data.y_train  # pixel support is computed only when training labels exist
        if y_train is None:
            left_out["support"] = "the training data has no labels 'y'"
        elif pixel is None:
            left_out["support"] = "no pixel-space hull was computed (--n-pixel 0)"
        if pixel is not None and y_train is not None:
            rows = []
            for i in range(min(3, len(pixel[0]))):
                row = {"image": data.x_test[i], "title": f"test #{i}: {names[int(data.y_test[i])]}"}
                for key, idx, alpha in (
                    ("feature", S.support_idx[i], S.support_alpha[i]),
                    ("pixel", pixel[0][i], pixel[1][i]),
                ):
                    row[key] = [
                        (data.x_train[t], f"{names[int(y_train[t])]} {alpha[c]:.2f}")
                        for c, t in enumerate(idx[:4])
                        if t >= 0
                    ]
                rows.append(row)
            figs["support"] = figures.support(rows, out / "support.png")
    return figs, left_out
