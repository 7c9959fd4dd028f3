"""Scores of the real `pytorch-ood` detectors on given features, for test_vs_pytorch_ood.py.

Runs in the separate cross-check env, not in the project's: pytorch-ood 0.4.0 imports torchvision
at import time, and no torchvision installs beside the project's pinned torch CPU build. `make test`
builds that env (``.venv-xcheck``, from ``tests/xcheck-requirements.txt``)::

    .venv-xcheck/bin/python tests/guard/detectors/pytorch_ood_scores.py IN.npz OUT.npz

IN.npz holds float32 features ``fit`` (N, f), ``id``, ``digits``, ``uniform`` (M, f), integer
labels ``y_fit`` (N,) and the final layer ``W`` (n, f), ``b`` (n,). OUT.npz gets one float64
array ``<detector>__<split>`` per detector (msp, energy, mahalanobis, knn, vim, fdbd) and split
(id, digits, uniform): pytorch-ood's outlier scores (higher = more OOD). The detectors are fitted
and run through pytorch-ood's own API: ``fit_features`` / ``predict_features``, the logit
detectors (MaxSoftmax, EnergyBased) through ``predict`` with the final layer as the model's
``torch.nn.Linear``. This script imports nothing of the project.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

import numpy as np
import torch
from pytorch_ood.detector import KNN, EnergyBased, Mahalanobis, MaxSoftmax, ViM, fDBD

NAMES = ("msp", "energy", "mahalanobis", "knn", "vim", "fdbd")
SPLITS = ("id", "digits", "uniform")


def _head(W: np.ndarray, b: np.ndarray) -> torch.nn.Linear:
    head = torch.nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    return head.eval()


def detector(name: str, z_fit: torch.Tensor, y_fit: torch.Tensor, head: torch.nn.Linear):
    """The fitted pytorch-ood detector ``name`` as a function features -> outlier scores."""
    if name == "msp":
        return MaxSoftmax(head).predict
    if name == "energy":
        return EnergyBased(head).predict
    if name == "mahalanobis":
        det = Mahalanobis(None).fit_features(z_fit, y_fit)
    elif name == "knn":
        det = KNN(None, k=50).fit_features(z_fit, y_fit)
    elif name == "vim":
        f = z_fit.shape[1]
        det = ViM(None, d=f // 2, w=head.weight, b=head.bias).fit_features(z_fit, y_fit)
    elif name == "fdbd":
        det = fDBD(None, head).fit_features(z_fit)
    else:
        raise ValueError(f"unknown detector {name!r}")
    return det.predict_features


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = argv
    with np.load(src) as d:
        data = {k: d[k] for k in d.files}
    head = _head(data["W"], data["b"])
    z_fit = torch.from_numpy(np.ascontiguousarray(data["fit"], dtype=np.float32))
    y_fit = torch.from_numpy(data["y_fit"].astype(np.int64))
    out = {}
    with torch.no_grad():
        for name in NAMES:
            score = detector(name, z_fit, y_fit, head)
            for split in SPLITS:
                z = torch.from_numpy(np.ascontiguousarray(data[split], dtype=np.float32))
                out[f"{name}__{split}"] = score(z).double().cpu().numpy()
    versions = f"pytorch-ood {version('pytorch-ood')}, torch {torch.__version__}"
    np.savez(dst, versions=np.array(versions), **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
