#!/usr/bin/env python
"""Adversarial evaluation of the guard: does its margin flag catch real and adaptive attacks?

Attacks run on the torch twin of the default model (``guard.nets.FashionResNet`` with the weights
of ``guard/assets/fmnist_resnet.pt``); the script first checks that the twin's logits equal the
ONNX model's (the one the guard scores with) on the clean images, so an adversarial found on the
twin is an adversarial of the guarded model. The guard then scores the images through ONNX.

* Inputs: the first ``--n`` Fashion-MNIST test images (in file order) that the ONNX model
  classifies correctly, ``float32 [N, 1, 28, 28]`` in ``[0, 1]``.
* Attacks (Adversarial Robustness Toolbox, ``adversarial-robustness-toolbox``, on an ART
  ``PyTorchClassifier`` with ``clip_values=(0, 1)``), all untargeted against the true label:
  DeepFool (Moosavi-Dezfooli et al. 2016; overshoot 0.02, all 10 classes, up to 50 steps),
  PGD-Linf (Madry et al. 2018; eps in {0.03, 0.1, 0.2}, ``--pgd-steps`` 40 steps of
  2.5 eps / steps, one random start) and Carlini-Wagner L2 (2017; confidence 0, ART's variant
  with line search: ``--cw-search`` 8 binary-search steps of ``--cw-iter`` 10 steps from
  ``c = --cw-const`` 0.1). The ART classifier computes per-sample class gradients in one
  backward pass (see :func:`art_classifier`); the numbers are ART's own.
* Adaptive attack that knows the guard (own torch PGD-Linf loop, same step rule): maximise
  ``min(CE(z, y), cap) + lam * m(z) - mu * d_nn(f)`` (``cap`` optional) where ``m`` is the
  closed-form feature-space margin of the best wrong class ``k``,
  ``min_{j != k} (z_k - z_j) / ||w_k - w_j||`` (negative until ``k`` wins; once it wins, a lower
  bound of the guard's exact ``d_min``, which adds the constraint ``f >= 0``), and ``d_nn`` the
  distance of the features ``f`` to the nearest of the ``--n-ref`` (seeded subset) training
  features that the model predicts as ``k`` (an upper bound of the distance to the training
  hull). ``lam`` pushes the flagged quantity ``d_min`` up, ``mu`` the abstain signals (hull
  distance, and with it ``d_min - d_hull < 0``) down; capping CE stops it from dragging the
  features ever further out once the image is misclassified. Against the default abstention
  score (led by the hull distance of the half-whitened normalised features,
  :mod:`guard.detectors.whitened`) the same loop runs with ``d_nn`` measured in that space
  (``space = "hw"``: the distance of ``to_sphere(f A)`` to the nearest transformed reference
  feature of class ``k``, ``A`` the default score's own transform: an upper bound of the
  distance its ``hw_sphere_hull`` component reads); ``space = "sphere"`` measures it between
  L2-normalised features (the spherical hull, the previous default's lead). Per image the
  misclassified iterate with the best attacker objective ``lam * m - mu * d_nn`` is kept.
  ``lam = mu = 0`` without cap is plain PGD in the same loop (last iterate; a cross-check of
  ART's PGD).

Only *successful* adversarials count: the ONNX model's prediction differs from the true label.
Per attack: success rate, median L2 / Linf perturbation of the successful ones, the guard's
detection rate at its calibrated flag threshold (``guard.decide(...).adversarial``, ``d_min`` below
the 1% quantile of held-out clean margins), its abstain rate, "caught" (flagged or abstained),
full evasion (successful, not flagged, not abstained, as a share of all attacked images), AUROC
clean-vs-adversarial of the outlier scores ``-d_min``, ``-ambiguity``, hull distance, sphere hull
distance and the guard's abstention score ``ood_score``, and the median ``d_min`` of clean vs
adversarial images.

Writes ``--out``/adversarial.json and adversarial.md and prints the Markdown. Run from the
repository root (about 13 minutes on 2 shared cores with the defaults)::

    .venv/bin/python scripts/eval_adversarial.py --n 500
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch
import torch.nn.functional as F

from guard.artifact import load_artifact
from guard.datasets import as_model_input, load_fashion_mnist
from guard.estimator import Guard, Scores
from guard.evaluation.metrics import auroc
from guard.model.nets import FashionResNet

ASSETS = REPO_ROOT / "guard" / "assets"
DEFAULT_WEIGHTS = ASSETS / "fmnist_resnet.pt"
TWIN_TOL = 1e-3  # max |logit_torch - logit_onnx| accepted on clean images
PGD_EPS = (0.03, 0.1, 0.2)
# (eps, lam, mu, ce_cap, space) of the adaptive attack; lam = mu = 0 is plain PGD; space: where
# d_nn is measured ("raw" features, "sphere": the normalised ones, "hw": the half-whitened
# normalised ones the default score reads).
ADAPTIVE = tuple(
    (eps, lam, mu, cap, space)
    for eps in (0.01, 0.03, 0.1)
    for lam, mu, cap, space in (
        (0.0, 0.0, None, "raw"),
        (1.0, 0.0, None, "raw"),
        (10.0, 0.0, None, "raw"),
        (1.0, 1.0, 2.0, "raw"),
        (10.0, 10.0, 2.0, "raw"),
        (1.0, 1.0, 2.0, "hw"),
        (10.0, 10.0, 2.0, "hw"),
    )
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- model and data
def load_twin(weights: str | Path = DEFAULT_WEIGHTS) -> FashionResNet:
    """The default model's torch twin in eval mode (frozen parameters)."""
    net = FashionResNet()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@torch.no_grad()
def twin_logits(net: FashionResNet, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    out = [
        net(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))).numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


def twin_check(net: FashionResNet, guard: Guard, x: np.ndarray) -> dict:
    """Logits and final layer of the twin vs the ONNX model the guard scores with."""
    lt = twin_logits(net, x)
    lo, _ = guard.model_.run(x)
    return {
        "max_abs_logit_diff": float(np.abs(lt - lo).max()),
        "pred_agreement": float(np.mean(lt.argmax(1) == lo.argmax(1))),
        "max_abs_W_diff": float(np.abs(net.fc.weight.numpy().astype(np.float64) - guard.W_).max()),
        "max_abs_b_diff": float(np.abs(net.fc.bias.numpy().astype(np.float64) - guard.b_).max()),
    }


def first_correct(guard: Guard, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` Fashion-MNIST test images (file order) the ONNX model gets right."""
    images, labels = load_fashion_mnist("test")
    x_all = as_model_input(images[: min(len(images), 2 * n + 100)])
    pred = guard.model_.run(x_all)[0].argmax(1)
    idx = np.flatnonzero(pred == labels[: len(x_all)])[:n]
    return x_all[idx], labels[idx], idx


# ---------------------------------------------------------------------------- attacks
def art_classifier(net: FashionResNet):
    """ART ``PyTorchClassifier`` of the twin; per-sample class gradients in one backward pass.

    ART 1.20's ``class_gradient`` with one label per sample runs one backward pass per distinct
    label (10 here); CW-L2 calls it twice per step. The samples of a batch are independent (eval
    mode), so the gradient of ``sum_i z_i[label_i]`` w.r.t. the batch gives every sample's own
    gradient at once: the same numbers, 5-10x faster.
    """
    from art.estimators.classification import PyTorchClassifier

    class _Classifier(PyTorchClassifier):
        def class_gradient(self, x, label=None, training_mode=False, **kwargs):
            if isinstance(label, list):
                label = np.array(label)
            if not (
                isinstance(label, np.ndarray)
                and label.ndim == 1
                and len(label) == len(x)
                and not training_mode
                and self.all_framework_preprocessing
            ):
                return super().class_gradient(x, label, training_mode, **kwargs)
            self._model.eval()
            xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
            x_in, _ = self._apply_preprocessing(xt, y=None, fit=False, no_grad=False)
            z = self._model(x_in)[-1]
            idx = torch.from_numpy(label.astype(np.int64))[:, None]
            (g,) = torch.autograd.grad(z.gather(1, idx).sum(), xt)
            return g.numpy()[:, None]

    return _Classifier(
        model=net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def attack_names(pgd_eps=PGD_EPS) -> list[str]:
    return ["DeepFool"] + [f"PGD-Linf eps={e:g}" for e in pgd_eps] + ["CW-L2"]


def run_art_attack(
    name: str,
    clf,
    x: np.ndarray,
    y: np.ndarray,
    *,
    pgd_steps: int = 40,
    deepfool_iter: int = 50,
    cw_iter: int = 10,
    cw_search: int = 8,
    cw_const: float = 0.1,
    batch_size: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Adversarial images of attack ``name`` (one of :func:`attack_names`) with ART."""
    from art.attacks.evasion import CarliniL2Method, DeepFool, ProjectedGradientDescent

    np.random.seed(seed)
    torch.manual_seed(seed)
    if name == "DeepFool":
        atk = DeepFool(
            clf,
            max_iter=deepfool_iter,
            epsilon=0.02,
            nb_grads=10,
            batch_size=batch_size,
            verbose=False,
        )
        return atk.generate(x=x).astype(np.float32)
    if name.startswith("PGD-Linf"):
        eps = float(name.split("=")[1])
        atk = ProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=eps,
            eps_step=2.5 * eps / pgd_steps,
            max_iter=pgd_steps,
            targeted=False,
            num_random_init=1,
            batch_size=batch_size,
            verbose=False,
        )
        return atk.generate(x=x, y=y).astype(np.float32)
    if name == "CW-L2":
        atk = CarliniL2Method(
            clf,
            confidence=0.0,
            targeted=False,
            learning_rate=0.01,
            binary_search_steps=cw_search,
            max_iter=cw_iter,
            initial_const=cw_const,
            batch_size=batch_size,
            verbose=False,
        )
        return atk.generate(x=x, y=np.eye(10, dtype=np.float32)[y]).astype(np.float32)
    raise ValueError(f"unknown attack {name!r}")


def closed_form_margin(z: torch.Tensor, k: torch.Tensor, wdist: torch.Tensor) -> torch.Tensor:
    """``min_{j != k} (z_k - z_j) / ||w_k - w_j||`` per row: the unconstrained feature-space
    distance to the boundary of class ``k`` (negative when ``k`` is not the top class)."""
    zk = z.gather(1, k[:, None])
    d = (zk - z) / wdist[k]  # wdist has inf on the diagonal: the j = k term is 0 / inf = 0
    d = d.masked_fill(F.one_hot(k, z.shape[1]).bool(), math.inf)
    return d.min(1).values


def adaptive_pgd(
    net: FashionResNet,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    steps: int = 40,
    lam: float = 1.0,
    mu: float = 0.0,
    ce_cap: float | None = None,
    ref_feats: np.ndarray | None = None,
    ref_pred: np.ndarray | None = None,
    space: str = "raw",
    transform: np.ndarray | None = None,
    batch_size: int = 250,
    seed: int = 0,
) -> np.ndarray:
    """PGD-Linf maximising ``CE + lam * margin(best wrong class) - mu * d_nn(features)``;
    ``space="sphere"`` measures ``d_nn`` between L2-normalised features, ``space="hw"`` between
    L2-normalised ``f @ transform``."""
    if space not in ("raw", "sphere", "hw"):
        raise ValueError(f"space must be 'raw', 'sphere' or 'hw', got {space!r}")
    if space == "hw" and transform is None:
        raise ValueError("space='hw' needs the transform of the default score's hull")
    A = None if transform is None else torch.from_numpy(np.asarray(transform, dtype=np.float32))

    def embed(f: torch.Tensor) -> torch.Tensor:
        if space == "sphere":
            return F.normalize(f, dim=1)
        if space == "hw":
            return F.normalize(f @ A, dim=1)
        return f

    W = net.fc.weight
    wdist = torch.cdist(W, W)
    wdist.fill_diagonal_(math.inf)
    ref = (
        None
        if ref_feats is None or mu == 0
        else torch.from_numpy(np.ascontiguousarray(ref_feats, dtype=np.float32))
    )
    if ref is not None:
        ref = embed(ref)
    ref_cls = (
        None
        if ref is None or ref_pred is None
        else torch.from_numpy(np.asarray(ref_pred, dtype=np.int64))
    )
    step = 2.5 * eps / steps
    gen = torch.Generator().manual_seed(seed)
    out = np.empty_like(x)
    for s in range(0, len(x), batch_size):
        x0 = torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size]))
        yt = torch.from_numpy(y[s : s + batch_size]).long()
        xa = (x0 + torch.empty_like(x0).uniform_(-eps, eps, generator=gen)).clamp(0, 1)
        best, best_obj = x0.clone(), torch.full((len(x0),), -math.inf)
        for it in range(steps + 1):
            xa.requires_grad_(True)
            f = net.features(xa)
            z = net.fc(f)
            k = z.masked_fill(F.one_hot(yt, z.shape[1]).bool(), -math.inf).argmax(1)
            obj = lam * closed_form_margin(z, k, wdist)  # k: the best wrong class
            if ref is not None:  # distance to the nearest reference feature (of class k)
                d = torch.cdist(embed(f), ref)
                if ref_cls is not None:
                    d = d.masked_fill(ref_cls[None, :] != k[:, None], math.inf)
                obj = obj - mu * d.min(1).values
            if lam or mu:  # keep the misclassified iterate with the best objective
                with torch.no_grad():
                    better = (z.argmax(1) != yt) & (obj > best_obj)
                    best[better], best_obj[better] = xa.detach()[better], obj.detach()[better]
            if it == steps:
                break
            ce = F.cross_entropy(z, yt, reduction="none")
            if ce_cap is not None:  # no push beyond ce_cap: the other terms take over
                ce = ce.clamp(max=ce_cap)
            loss = (ce + obj).sum()
            (g,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                xa = xa + step * g.sign()
                xa = torch.min(torch.max(xa, x0 - eps), x0 + eps).clamp(0, 1)
        # Plain PGD (and images never misclassified): the last iterate, as ART returns it.
        best = torch.where(torch.isfinite(best_obj)[:, None, None, None], best, xa.detach())
        out[s : s + batch_size] = best.numpy()
    return out


def adaptive_name(eps: float, lam: float, mu: float, cap: float | None, space: str = "raw") -> str:
    if lam == 0 and mu == 0 and cap is None:
        return f"eps={eps:g}: plain PGD (CE)"
    ce = "CE" if cap is None else f"min(CE, {cap:g})"
    d_nn = "d_nn" if space == "raw" else f"d_nn({space})"
    terms = "".join(
        t for t in (f" + {lam:g}·margin" if lam else "", f" − {mu:g}·{d_nn}" if mu else "")
    )
    return f"eps={eps:g}: {ce}{terms}"


# ---------------------------------------------------------------------------- metrics
def _median(a: np.ndarray) -> float | None:
    return float(np.median(a)) if len(a) else None


def _auroc(a: np.ndarray, b: np.ndarray) -> float | None:
    """AUROC (b positive); unreachable boundaries (d_min = inf) count as a huge finite score."""
    if not (len(a) and len(b)):
        return None
    a, b = (np.nan_to_num(np.asarray(v, np.float64), posinf=1e18, neginf=-1e18) for v in (a, b))
    return auroc(a, b)


def evaluate(
    guard: Guard,
    clean: Scores,
    x: np.ndarray,
    y: np.ndarray,
    x_adv: np.ndarray,
    net: FashionResNet | None = None,
) -> dict:
    """Metrics of one attack; only adversarials that change the ONNX prediction count."""
    adv = guard.score(x_adv)
    dec = guard.decide(adv)
    ok = adv.pred != y
    delta = (x_adv - x).reshape(len(x), -1).astype(np.float64)
    l2, linf = np.linalg.norm(delta, axis=1), np.abs(delta).max(1)
    n_ok = int(ok.sum())
    flagged, abstained = dec.adversarial[ok], dec.abstain[ok]

    def rate(v: np.ndarray) -> float | None:
        return float(v.mean()) if len(v) else None

    return {
        "n_attacked": int(len(x)),
        "n_success": n_ok,
        "success_rate": n_ok / len(x),
        # success on the torch twin (the attacked model); differs only at ties on the boundary
        "twin_success_rate": (
            None if net is None else float(np.mean(twin_logits(net, x_adv).argmax(1) != y))
        ),
        "median_l2": _median(l2[ok]),
        "median_linf": _median(linf[ok]),
        "detection_rate": rate(flagged),
        "abstain_rate": rate(abstained),
        "caught_rate": rate(flagged | abstained),
        "full_evasion_rate": float(np.sum(~flagged & ~abstained)) / len(x),
        "auroc_neg_d_min": _auroc(-clean.d_min, -adv.d_min[ok]),
        "auroc_neg_ambiguity": _auroc(-clean.ambiguity, -adv.ambiguity[ok]),
        "auroc_hull": _auroc(clean.hull_upper, adv.hull_upper[ok]),
        "auroc_sphere": _auroc(clean.sphere_upper, adv.sphere_upper[ok]),
        "auroc_ood_score": (
            None
            if not np.isfinite(clean.ood_score).all()
            else _auroc(clean.ood_score, adv.ood_score[ok])
        ),
        "median_d_min_clean": _median(clean.d_min),
        "median_d_min_adv": _median(adv.d_min[ok]),
        "median_hull_adv": _median(adv.hull_upper[ok]),
    }


def clean_row(guard: Guard, clean: Scores) -> dict:
    dec = guard.decide(clean)
    return {
        "n": len(clean),
        "flag_rate": float(dec.adversarial.mean()),
        "abstain_rate": float(dec.abstain.mean()),
        "caught_rate": float((dec.adversarial | dec.abstain).mean()),
        "median_d_min": float(np.median(clean.d_min)),
        "median_hull": float(np.median(clean.hull_upper)),
    }


def run_suite(
    net: FashionResNet,
    guard: Guard,
    x: np.ndarray,
    y: np.ndarray,
    *,
    attacks: list[str] | None = None,
    adaptive=ADAPTIVE,
    pgd_steps: int = 40,
    adaptive_steps: int = 40,
    deepfool_iter: int = 50,
    cw_iter: int = 10,
    cw_search: int = 8,
    cw_const: float = 0.1,
    n_ref: int = 10000,
    batch_size: int = 100,
    seed: int = 0,
) -> dict:
    """All attacks on ``x`` (correctly classified, labels ``y``) and their metrics."""
    clean = guard.score(x)
    res: dict = {
        "twin_check": twin_check(net, guard, x),
        "clean": clean_row(guard, clean),
        "attacks": {},
        "adaptive": {},
    }
    clf = art_classifier(net)
    for name in attacks if attacks is not None else attack_names():
        t = time.perf_counter()
        x_adv = run_art_attack(
            name,
            clf,
            x,
            y,
            pgd_steps=pgd_steps,
            deepfool_iter=deepfool_iter,
            cw_iter=cw_iter,
            cw_search=cw_search,
            cw_const=cw_const,
            batch_size=batch_size,
            seed=seed,
        )
        r = evaluate(guard, clean, x, y, x_adv, net)
        r["seconds"] = time.perf_counter() - t
        res["attacks"][name] = r
        log(
            f"  {name}: success {r['success_rate']:.3f}, detected {r['detection_rate']}, "
            f"{r['seconds']:.0f} s"
        )
    feats = guard.train_features_
    sel = np.random.default_rng(seed).choice(len(feats), min(n_ref, len(feats)), replace=False)
    own = guard.ood_.detectors_ if guard.ood_ is not None else []
    hw = [d for d in own if d.name == "hw_sphere_hull"]
    transform = hw[0].transform_ if hw else None
    for eps, lam, mu, cap, space in adaptive:
        name = adaptive_name(eps, lam, mu, cap, space)
        t = time.perf_counter()
        x_adv = adaptive_pgd(
            net,
            x,
            y,
            eps=eps,
            steps=adaptive_steps,
            lam=lam,
            mu=mu,
            ce_cap=cap,
            ref_feats=feats[sel],
            ref_pred=guard.train_pred_[sel],
            space=space,
            transform=transform,
            seed=seed,
        )
        r = evaluate(guard, clean, x, y, x_adv, net)
        r.update(eps=eps, lam=lam, mu=mu, ce_cap=cap, space=space)
        r["seconds"] = time.perf_counter() - t
        res["adaptive"][name] = r
        log(
            f"  {name}: success {r['success_rate']:.3f}, detected {r['detection_rate']}, "
            f"evasion {r['full_evasion_rate']:.3f}, {r['seconds']:.0f} s"
        )
    return res


# ---------------------------------------------------------------------------- report
def _f(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


HEADER = (
    "| Attack | success | med L2 | med L∞ | flagged (d_min) | abstain | caught | "
    "full evasion | AUROC −d_min | AUROC −ambiguity | AUROC hull | AUROC sphere hull | "
    "AUROC ood_score | med d_min adv |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def _row(name: str, r: dict) -> str:
    return (
        f"| {name} | {_pct(r['success_rate'])} ({r['n_success']}/{r['n_attacked']}) | "
        f"{_f(r['median_l2'])} | {_f(r['median_linf'])} | {_pct(r['detection_rate'])} | "
        f"{_pct(r['abstain_rate'])} | {_pct(r['caught_rate'])} | "
        f"{_pct(r['full_evasion_rate'])} | {_f(r['auroc_neg_d_min'])} | "
        f"{_f(r['auroc_neg_ambiguity'])} | {_f(r['auroc_hull'])} | "
        f"{_f(r.get('auroc_sphere'))} | {_f(r.get('auroc_ood_score'))} | "
        f"{_f(r['median_d_min_adv'])} |\n"
    )


def markdown(doc: dict) -> str:
    c, t, th = doc["results"]["clean"], doc["results"]["twin_check"], doc["thresholds"]
    s = (
        f"# Adversarial evaluation of the guard ({doc['config']['artifact']})\n\n"
        f"`{doc['command']}` — {doc['library']['name']} {doc['library']['version']}, "
        f"torch {doc['torch']}, {doc['config']['n']} correctly classified Fashion-MNIST test "
        f"images, {doc['seconds']:.0f} s.\n\n"
        f"Torch twin vs ONNX on the clean images: max |Δ logit| = "
        f"{t['max_abs_logit_diff']:.2e}, prediction agreement {_pct(t['pred_agreement'])}.\n\n"
        f"Thresholds: flag when d_min < {th['d_min']:.4g} (calibrated at "
        f"{_pct(th['target_flag_rate'])} false flags), abstain "
        + (
            f"when the p-value of the combined OOD score < {th['target_abstain_rate']:g}"
            if doc.get("combined_ood")
            else f"when hull distance > {th['hull']:.4g} ({_pct(th['target_abstain_rate'])}) or "
            f"ambiguity < {th['ambiguity']:g}"
        )
        + ".\n\n"
        f"Clean images: flagged {_pct(c['flag_rate'])}, abstain {_pct(c['abstain_rate'])}, "
        f"caught {_pct(c['caught_rate'])}, median d_min {c['median_d_min']:.3f}, median hull "
        f"distance {c['median_hull']:.3f}.\n\n"
        "Rates other than success and full evasion are over the successful adversarials; "
        "full evasion = successful, not flagged and not abstained, over all attacked images. "
        "AUROC: clean (negative) vs successful adversarial (positive), outlier scores.\n\n"
        "## Standard attacks (ART)\n\n" + HEADER
    )
    for name, r in doc["results"]["attacks"].items():
        s += _row(name, r)
    if doc["results"]["adaptive"]:
        s += (
            "\n## Adaptive attack (own PGD-L∞ loop, "
            f"{doc['config']['adaptive_steps']} steps of 2.5·eps/steps, one random start)\n\n"
            "Maximises CE (optionally capped) + lam·margin − mu·d_nn: margin = closed-form "
            "feature-space margin of the best wrong class k, min_j (z_k − z_j)/‖w_k − w_j‖ "
            "(a lower bound of d_min once k wins); d_nn = distance of the features to the "
            "nearest of "
            f"{doc['config']['n_ref']} training features predicted as k (an upper bound of "
            "the distance to the class-k part of the training hull); d_nn(hw) = the same "
            "between the half-whitened L2-normalised features to_sphere(f A), A the default "
            "score's transform (an upper bound of the distance of its lead component, the "
            "half-whitened spherical hull). Plain PGD = the same loop on CE alone.\n\n" + HEADER
        )
        for name, r in doc["results"]["adaptive"].items():
            s += _row(name, r)
    return s


def _rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=500, help="correctly classified test images")
    p.add_argument("--artifact", type=Path, default=REPO_ROOT / "artifacts" / "fmnist_resnet")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="torch twin state dict")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "adversarial")
    p.add_argument("--pgd-steps", type=int, default=40)
    p.add_argument("--adaptive-steps", type=int, default=40)
    p.add_argument("--deepfool-iter", type=int, default=50)
    p.add_argument("--cw-iter", type=int, default=10, help="CW-L2 steps per binary-search step")
    p.add_argument("--cw-search", type=int, default=8, help="CW-L2 binary-search steps")
    p.add_argument("--cw-const", type=float, default=0.1, help="CW-L2 initial constant c")
    p.add_argument(
        "--n-ref",
        type=int,
        default=10000,
        help="training features for the adaptive attack's hull proxy",
    )
    p.add_argument("--no-adaptive", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import art

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    guard = load_artifact(args.artifact)
    net = load_twin(args.weights)
    x, y, _ = first_correct(guard, args.n)
    log(f"{len(x)} correctly classified test images")
    chk = twin_check(net, guard, x)
    if chk["max_abs_logit_diff"] > TWIN_TOL or chk["pred_agreement"] < 1:
        raise SystemExit(f"torch twin differs from the ONNX model: {chk}")
    log(f"twin check: {chk}")
    res = run_suite(
        net,
        guard,
        x,
        y,
        pgd_steps=args.pgd_steps,
        adaptive_steps=args.adaptive_steps,
        deepfool_iter=args.deepfool_iter,
        cw_iter=args.cw_iter,
        cw_search=args.cw_search,
        cw_const=args.cw_const,
        n_ref=args.n_ref,
        adaptive=() if args.no_adaptive else ADAPTIVE,
        seed=args.seed,
    )
    doc = {
        "command": "python scripts/eval_adversarial.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "library": {"name": "adversarial-robustness-toolbox", "version": art.__version__},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": {k: (_rel(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {
            "n": len(x),
            "pgd_eps": list(PGD_EPS),
            "adaptive_grid": []
            if args.no_adaptive
            else [dict(zip(("eps", "lam", "mu", "ce_cap", "space"), a)) for a in ADAPTIVE],
        },
        "thresholds": guard.thresholds_.to_dict(),
        "combined_ood": getattr(guard, "ood_", None) is not None,
        "results": res,
        "seconds": time.perf_counter() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adversarial.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    (args.out / "adversarial.md").write_text(md)
    print(md)
    return doc


if __name__ == "__main__":
    main()
