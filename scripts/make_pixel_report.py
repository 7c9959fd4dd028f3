#!/usr/bin/env python
"""The report's "pixel space" section: ``guard explain`` (paper section 7.1) on a few images of
two models, and one Markdown page with the figures (``reports/pixel_space/pixel_space.md``,
included by ``make report``).

Models: the default Fashion-MNIST ResNet (1x28x28) and the 3-channel ResNet-20
(``guard/assets/fmnist_resnet20_rgb.onnx``, 3x32x32: Fashion-MNIST padded and repeated by
``guard.model.nets.to_rgb32``). For each: ``--n-typical`` correctly classified test images (the
first of a seeded subset whose hull is closer than their boundary), the most ambiguous test
image of the subset (``d_min - d_hull`` lowest) and one out-of-distribution image (the
handwritten digit of a seeded subset that the guard finds farthest out: highest
``ood_score``). Artifacts are fitted first when missing (the default one by
``guard.defaults.default_guard``; the 3-channel one on the 60,000 training images through
``to_rgb32``, the training ``.npz`` written next to it).

    .venv/bin/python scripts/make_pixel_report.py --time-budget-s 600

Every case writes its own folder (``explain.md``, ``explain.json``, PNG and NPY files); the page
tabulates every pre-image with its residual, tolerance, ``met`` and class, and checks the
acceptance rules (flip pre-image on the boundary, the morph keeping the class).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np

from guard import Guard, load_artifact, save_artifact
from guard.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from guard.defaults import default_guard
from guard.evaluation import sets as evalsets
from guard.inversion.explain import ExplainConfig, explain
from guard.inversion.render import write_explanation
from guard.inversion.solver import SolverConfig
from guard.model import OnnxClassifier

ASSETS = REPO_ROOT / "guard" / "assets"
RGB_MODEL = ASSETS / "fmnist_resnet20_rgb.onnx"


def rgb32(x):
    """(N, 1, 28, 28) -> (N, 3, 32, 32) with the model's own :func:`to_rgb32`."""
    import torch

    from guard.model.nets import to_rgb32

    return to_rgb32(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def rgb_guard(path: Path) -> tuple[Guard, np.ndarray]:
    """The 3-channel model's artifact (fitted on its 60,000 training images when missing)."""
    train = path.parent / f"{path.name}_train.npz"
    if not train.is_file():
        x, y = load_fashion_mnist("train")
        np.savez(train, x=rgb32(x[:, None]), y=y.astype(np.int64))  # uint8: scaled at load
    data = np.load(train)
    x = data["x"]
    if not (path / "manifest.json").is_file():
        model = OnnxClassifier(RGB_MODEL)
        g = Guard(progress=True).fit(model, x, data["y"], class_names=list(FASHION_MNIST_CLASSES))
        save_artifact(g, path, overwrite=True)
    return load_artifact(path), x


def pick_cases(guard: Guard, x_test, y_test, x_ood, n_typical: int) -> list[tuple[str, Any, str]]:
    """(name, image, description) of the typical, ambiguous and OOD images."""
    s = guard.score(x_test)
    names = guard.class_names_
    cases = []
    good = np.flatnonzero((s.pred == y_test) & (s.ambiguity > 0))
    for k, i in enumerate(good[:n_typical]):
        cases.append(
            (
                f"typical_{k}",
                x_test[i],
                f"test image {i} ({names[y_test[i]]}), correct, "
                f"d_min {s.d_min[i]:.3f} > d_hull {s.hull_upper[i]:.3f}",
            )
        )
    i = int(np.argmin(s.ambiguity))
    cases.append(
        (
            "ambiguous",
            x_test[i],
            f"test image {i} (label {names[y_test[i]]}, predicted "
            f"{names[s.pred[i]]}): the most ambiguous of the subset, d_min {s.d_min[i]:.3f} "
            f"vs d_hull {s.hull_upper[i]:.3f}",
        )
    )
    so = guard.score(x_ood)
    key = so.ood_score if np.isfinite(so.ood_score).all() else so.hull_upper
    i = int(np.argmax(key))
    cases.append(
        (
            "ood",
            x_ood[i],
            f"handwritten digit {i} (out of distribution), predicted "
            f"{names[so.pred[i]]}, hull distance {so.hull_upper[i]:.3f}, p-value "
            f"{so.p_value[i]:.3g}",
        )
    )
    return cases


def run_model(
    label: str, guard: Guard, x_train, cases, out: Path, cfg: ExplainConfig, progress: bool
) -> list[dict]:
    rows = []
    for name, x, desc in cases:
        folder = out / label / name
        t0 = time.monotonic()
        e = explain(guard, x, x_train=x_train, config=cfg, progress=progress)
        write_explanation(e, folder, command="scripts/make_pixel_report.py", title=desc)
        doc = json.loads((folder / "explain.json").read_text())
        rows.append(
            {
                "model": label,
                "case": name,
                "desc": desc,
                "doc": doc,
                "seconds": time.monotonic() - t0,
            }
        )
        print(
            f"{label}/{name}: {len(doc['solves'])} pre-images, "
            f"{sum(r['met'] for r in doc['solves'])} met, {time.monotonic() - t0:.0f} s"
        )
    return rows


def page(rows: list[dict], command: str, cfg: ExplainConfig) -> str:
    lines = [
        "# Pixel space: images that map to flip points, hull projections and ball perimeters",
        "",
        "The paper's section 7.1 (eq. 15–18, Fig. 3, 5–9) through `guard explain` on two "
        "models: the default Fashion-MNIST ResNet (1×28×28) and the 3-channel ResNet-20 "
        "(3×32×32, Fashion-MNIST through `to_rgb32`). Every pre-image is the image closest to "
        "its reference whose features reach the target (augmented Lagrangian + L-BFGS-B "
        "through the model's onnx2torch twin, with a leaky-ReLU homotopy when a start stalls), "
        "judged on onnxruntime's features of the saved float32 pixels: *met* = feature "
        f"residual ≤ {cfg.solver.rtol:g} × the reference's residual + {cfg.solver.atol:g}. "
        "`flip` targets the exact closest flip point (eq. 17); `flip_boundary` any point of "
        "the same decision boundary (the closest image the model sees on it).",
        "",
        f"Made by `{command}`.",
        "",
    ]
    for r in rows:
        doc = r["doc"]
        names = doc["class_names"]
        base = f"../pixel_space/{r['model']}/{r['case']}/"
        lines += [f"## {r['model']}: {r['case']}", "", r["desc"] + ".", ""]
        t1 = doc["table1"]
        lines += [
            f"Predicted {names[doc['pred']]}; d_min {t1['d_min']:.4f} (to "
            f"{names[t1['nearest_class']]}); {t1['train_in_ball']} training features inside "
            f"B(x_phi); {r['seconds']:.0f} s.",
            "",
            "| pre-image | reference | residual | tolerance | met | pixel distance | class |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in doc["solves"]:
            lines.append(
                f"| {s['name']} | {s['reference']} | {s['feature_residual']:.3g} | "
                f"{s['tolerance']:.3g} | {'yes' if s['met'] else '**no**'} | "
                f"{s['pixel_distance']:.4g} | {names[s['predicted_class']]} |"
            )
        checks = []
        for s in doc["solves"]:
            if s["target"] == "flip":
                checks.append(
                    f"{s['name']}: logit gap {s['logit_gap']:.3g} (tolerance "
                    f"{s['logit_tolerance']:.3g}), "
                    + ("on the boundary" if s["on_boundary"] else "**not on the boundary**")
                )
        morph = [s for s in doc["solves"] if s["target"] == "morph"]
        if morph:
            kept = all(s["predicted_class"] == doc["pred"] for s in morph)
            checks.append(
                f"morph: {len(morph)} steps, "
                + ("all classified " if kept else "**not all** classified ")
                + names[doc["pred"]]
            )
        lines += [""] + [f"* {c}" for c in checks] + [f"* note: {n}" for n in doc["notes"]]
        for key, file in doc["figures"].items():
            lines += ["", f"![{r['case']} {key}]({base}{file})"]
        lines += ["", f"Details: [`explain.md`]({base}explain.md).", ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--default-artifact", type=Path, default=REPO_ROOT / "artifacts/fmnist_resnet")
    p.add_argument("--rgb-artifact", type=Path, default=REPO_ROOT / "artifacts/fmnist_resnet20_rgb")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports/pixel_space")
    p.add_argument("--n-typical", type=int, default=1)
    p.add_argument("--n-subset", type=int, default=300, help="test images to pick from")
    p.add_argument("--n-morph", type=int, default=5)
    p.add_argument("--n-perimeter", type=int, default=3)
    p.add_argument("--time-budget-s", type=float, default=900, help="per image")
    p.add_argument("--solve-budget-s", type=float, default=120, help="per pre-image")
    p.add_argument("--models", default="default,rgb", help="comma-separated; none: page only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    import torch

    torch.manual_seed(args.seed)
    cfg = ExplainConfig(
        n_perimeter=args.n_perimeter,
        n_morph=args.n_morph,
        time_budget_s=args.time_budget_s,
        solver=SolverConfig(max_seconds=args.solve_budget_s),
    )
    x_test, y_test = evalsets.fmnist_test(args.n_subset, seed=args.seed)
    x_ood = evalsets.digits(args.n_subset, seed=args.seed)
    rows: list[dict] = []
    models = args.models.split(",")
    progress = not args.no_progress
    if "default" in models:
        g = default_guard(args.default_artifact, progress=progress)
        x_train = evalsets.fmnist_train(None)[0]
        cases = pick_cases(g, x_test, y_test, x_ood, args.n_typical)
        rows += run_model("fmnist_resnet", g, x_train, cases, args.out, cfg, progress)
    if "rgb" in models:
        g, x_train = rgb_guard(args.rgb_artifact)
        cases = pick_cases(g, rgb32(x_test), y_test, rgb32(x_ood), args.n_typical)
        rows += run_model("fmnist_resnet20_rgb", g, x_train, cases, args.out, cfg, progress)
    command = "python scripts/make_pixel_report.py " + " ".join(sys.argv[1:])
    for label in {r["model"] for r in rows}:
        mine = [{k: v for k, v in r.items() if k != "doc"} for r in rows if r["model"] == label]
        for r in mine:
            r["command"] = command.strip()
        (args.out / label / "cases.json").write_text(json.dumps(mine, indent=2) + "\n")
    # the page covers every model's cases written so far (models may be run one at a time)
    rows = []
    for label in ("fmnist_resnet", "fmnist_resnet20_rgb"):
        f = args.out / label / "cases.json"
        if f.is_file():
            for r in json.loads(f.read_text()):
                r["doc"] = json.loads((args.out / label / r["case"] / "explain.json").read_text())
                rows.append(r)
    commands = sorted({r["command"] for r in rows})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pixel_space.md").write_text(page(rows, "`, `".join(commands), cfg))
    print(f"written {args.out / 'pixel_space.md'}")


if __name__ == "__main__":
    main()
