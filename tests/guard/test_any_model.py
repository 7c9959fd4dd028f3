"""The geometry works for any ONNX classifier ending in an affine layer: other architectures,
image sizes, 3 channels, other numbers of classes and features, non-ReLU features. Checked end
to end (torch -> ONNX -> Guard.fit -> score) against the independent reference solver."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from guard import Guard, OnnxClassifier  # noqa: E402
from guard.model.export import export_torch_to_onnx  # noqa: E402
from tests.reference import solvers as reference  # noqa: E402


class SmallCifarNet(nn.Module):
    """3-channel 32x32 CNN, 24 ReLU features after max pooling, 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 24, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        return self.head(self.body(x))


class TanhMLP(nn.Module):
    """Grayscale 20x20 MLP whose last hidden layer (40 features) is tanh: not nonnegative."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(400, 40), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(40, 13), nn.Softmax(dim=1))

    def forward(self, x):
        return self.head(self.body(x))


def _fit(module, shape, tmp_path, n_train=300, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.random((n_train,) + shape, dtype=np.float32)
    path = export_torch_to_onnx(module, torch.from_numpy(x[:4]), tmp_path / "m.onnx")
    clf = OnnxClassifier(path)
    guard = Guard(hull_k=32, calib_fraction=0).fit(clf, x)
    xq = rng.random((6,) + shape, dtype=np.float32) * 1.3
    return guard, clf, xq


@pytest.mark.parametrize(
    "arch,shape,n,f,nonneg",
    [
        (SmallCifarNet, (3, 32, 32), 5, 24, True),
        (TanhMLP, (1, 20, 20), 13, 40, False),
    ],
)
def test_geometry_matches_reference(arch, shape, n, f, nonneg, tmp_path):
    torch.manual_seed(1)
    guard, clf, xq = _fit(arch(), shape, tmp_path)
    assert (clf.n_classes, clf.n_features) == (n, f)
    assert guard.nonneg_ is nonneg
    s = guard.score(xq)
    _, feats = clf.run(xq)
    T = guard.train_features_
    for r in range(len(xq)):
        i = int(s.pred[r])
        for j in range(n):
            if j == i:
                continue
            ref = reference.margin(feats[r].astype(np.float64), guard.W_, guard.b_, i, j, nonneg)
            assert s.margins[r, j] == pytest.approx(ref, rel=1e-6, abs=1e-7), (r, j)
        ref_h = reference.hull_distance(T, feats[r].astype(np.float64))
        assert s.hull_lower[r] <= ref_h + 1e-6 and s.hull_upper[r] >= ref_h - 1e-6
        assert s.hull_upper[r] == pytest.approx(ref_h, rel=1e-3, abs=1e-6)
    # ambiguity is eq. 26 on the certified upper bound
    np.testing.assert_allclose(s.ambiguity, s.d_min - s.hull_upper)
