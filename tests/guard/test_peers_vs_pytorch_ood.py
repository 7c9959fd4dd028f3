"""Cross-check: guard.peers against the `pytorch-ood` package's detectors on the same features.

Real data: the default model's penultimate features of 3,000 Fashion-MNIST training images (fit),
1,000 test images (ID) against 1,000 handwritten digits and 1,000 uniform-noise images (OOD).
pytorch-ood's detectors run through its ``fit_features`` / ``predict_features`` API (logit
detectors through the final layer as a ``torch.nn.Linear``). AUROCs must agree to 1e-3 and the
per-sample scores must be (affinely) the same ranking.

pytorch-ood 0.4.0 imports torchvision at package import; where it cannot be imported (no
torchvision matching the pinned torch build), the module is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytorch_ood = pytest.importorskip("pytorch_ood")  # needs torchvision as well

import torch  # noqa: E402
from pytorch_ood.detector import (  # noqa: E402
    KNN,
    EnergyBased,
    Mahalanobis,
    MaxSoftmax,
    ViM,
    fDBD,
)

from guard import OnnxClassifier, peers  # noqa: E402
from guard.demo import DEFAULT_MODEL  # noqa: E402
from guard.evaluation import auroc  # noqa: E402

evalsets = pytest.importorskip("guard.evalsets")

N_FIT, N_EVAL = 3000, 1000


@pytest.fixture(scope="module")
def data():
    from guard.datasets import DataError

    try:
        x_fit, y_fit = evalsets.fmnist_train(N_FIT, seed=0)
        x_id, _ = evalsets.fmnist_test(N_EVAL, seed=0)
    except DataError as exc:  # pragma: no cover - setup installs the data set
        pytest.skip(str(exc))
    clf = OnnxClassifier(DEFAULT_MODEL)
    feats = {}
    for name, x in (("fit", x_fit), ("id", x_id), ("digits", evalsets.digits(N_EVAL, seed=0)),
                    ("uniform", evalsets.uniform_noise(N_EVAL))):
        feats[name] = clf.run(x)[1]
    return clf, feats, y_fit


def _head(clf):
    head = torch.nn.Linear(clf.n_features, clf.n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(clf.W.astype(np.float32)))
        head.bias.copy_(torch.from_numpy(clf.b.astype(np.float32)))
    return head.eval()


def _theirs(name, clf, feats, y_fit):
    head = _head(clf)
    z_fit, y = torch.from_numpy(feats["fit"]), torch.from_numpy(y_fit)
    if name == "msp":
        det = MaxSoftmax(head)
        return lambda z: det.predict(z)
    if name == "energy":
        det = EnergyBased(head)
        return lambda z: det.predict(z)
    if name == "mahalanobis":
        det = Mahalanobis(None).fit_features(z_fit, y)
    elif name == "knn":
        det = KNN(None, k=50).fit_features(z_fit, y)
    elif name == "vim":
        det = ViM(None, d=clf.n_features // 2, w=head.weight, b=head.bias).fit_features(z_fit, y)
    elif name == "fdbd":
        det = fDBD(None, head).fit_features(z_fit)
    return det.predict_features


@pytest.mark.parametrize("name", ["msp", "energy", "mahalanobis", "knn", "vim", "fdbd"])
def test_same_auroc_and_scores_as_pytorch_ood(data, name):
    clf, feats, y_fit = data
    ours = peers.make(name).fit(feats["fit"], y_fit, clf.W, clf.b)
    theirs = _theirs(name, clf, feats, y_fit)
    with torch.no_grad():
        s_ours = {k: ours.score(feats[k]) for k in ("id", "digits", "uniform")}
        s_theirs = {k: theirs(torch.from_numpy(feats[k])).double().cpu().numpy()
                    for k in ("id", "digits", "uniform")}
    for ood in ("digits", "uniform"):
        a_ours = auroc(s_ours["id"], s_ours[ood])
        a_theirs = auroc(s_theirs["id"], s_theirs[ood])
        assert a_ours == pytest.approx(a_theirs, abs=1e-3), (name, ood, a_ours, a_theirs)
    x = np.concatenate(list(s_ours.values()))
    y = np.concatenate(list(s_theirs.values()))
    assert np.corrcoef(x, y)[0, 1] > 0.999, name  # same score up to a positive affine map
