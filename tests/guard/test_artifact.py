"""Tests of guard.artifact: saving and strictly loading a fitted Guard (no pickle)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from guard import __version__
from guard.artifact import SCHEMA_VERSION, load_artifact, read_manifest, save_artifact
from guard.errors import ArtifactError, InputError
from guard.estimator import Guard, GuardState
from guard.model import OnnxClassifier
from guard.types import Scores

from . import onnx_builders as ob

SEED = 2
CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel"]
SCORE_FIELDS = (
    "pred",
    "logits",
    "margins",
    "d_min",
    "nearest_class",
    "margin_gap",
    "logit_radius",
    "hull_upper",
    "hull_lower",
    "hull_converged",
    "ambiguity",
    "in_union",
    "n_balls",
    "union_slack",
    "support_idx",
    "support_alpha",
)


@pytest.fixture(scope="module")
def built() -> ob.Built:
    return ob.gemm_transb1(seed=SEED)


@pytest.fixture(scope="module")
def x_train() -> np.ndarray:
    return ob.random_inputs(200, seed=11)


@pytest.fixture(scope="module")
def y_train(x_train: np.ndarray) -> np.ndarray:
    return np.random.default_rng(12).integers(0, ob.N_CLASSES, size=len(x_train))


@pytest.fixture(scope="module")
def x_test(x_train: np.ndarray) -> np.ndarray:
    # A mix of training inputs (inside the hull and, mostly, the union) and new, some far away.
    new = ob.random_inputs(24, seed=13)
    new[:6] = 3.0 * new[:6] - 1.0
    return np.concatenate([x_train[:8], new])


@pytest.fixture(scope="module")
def guard(built: ob.Built, x_train: np.ndarray, y_train: np.ndarray) -> Guard:
    return Guard(hull_k=32, calib_fraction=0).fit(
        OnnxClassifier(built.data), x_train, y_train, class_names=CLASS_NAMES
    )


@pytest.fixture()
def saved(guard: Guard, tmp_path: Path) -> Path:
    return save_artifact(guard, tmp_path / "art")


def _reseal_digest(art: Path) -> None:
    """Recompute digest.json after an edit, as a writer of that content would have written it
    (what the loader must then refuse is the content itself)."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in art.iterdir()}
    files.pop("digest.json")
    (art / "digest.json").write_text(json.dumps({"algorithm": "sha256", "files": files}))


def _assert_scores_identical(a: Scores, b: Scores) -> None:
    for name in SCORE_FIELDS:
        va, vb = getattr(a, name), getattr(b, name)
        assert va.dtype == vb.dtype, name
        assert va.shape == vb.shape, name
        # assert_array_equal treats NaN == NaN, so NaN positions must match too.
        np.testing.assert_array_equal(va, vb, err_msg=name)
    np.testing.assert_array_equal(np.isnan(a.margins), np.isnan(b.margins))


# --------------------------------------------------------------------------- round trip
def test_round_trip_arrays_and_scores(
    guard: Guard, saved: Path, built: ob.Built, x_test: np.ndarray
) -> None:
    loaded = load_artifact(saved)

    np.testing.assert_array_equal(loaded.W_, guard.W_)
    np.testing.assert_array_equal(loaded.b_, guard.b_)
    np.testing.assert_array_equal(loaded.train_features_, guard.train_features_)
    np.testing.assert_array_equal(loaded.radii_, guard.radii_)
    np.testing.assert_array_equal(loaded.train_pred_, guard.train_pred_)
    np.testing.assert_array_equal(loaded.train_labels_, guard.train_labels_)
    assert loaded.W_.dtype == guard.W_.dtype and loaded.radii_.dtype == guard.radii_.dtype
    assert loaded.class_names_ == CLASS_NAMES
    assert loaded.nonneg_ is guard.nonneg_ is True
    assert loaded.lipschitz_ == guard.lipschitz_
    assert loaded.affine_error_ == guard.affine_error_
    assert (loaded.hull_k, loaded.hull_tol, loaded.hull_max_rounds) == (
        32,
        guard.hull_tol,
        guard.hull_max_rounds,
    )
    assert loaded.hull_.index.ntotal == len(guard.train_features_)
    assert loaded.model_.sha256 == guard.model_.sha256 == hashlib.sha256(built.data).hexdigest()

    feats = built.features(x_test).astype(np.float32)
    before, after = guard.score_features(feats), loaded.score_features(feats)
    _assert_scores_identical(before, after)
    before, after = guard.score(x_test), loaded.score(x_test)
    _assert_scores_identical(before, after)

    # The scored set is not degenerate: NaN exactly at pred, some inputs in the union/hull.
    n = len(x_test)
    assert np.isnan(after.margins[np.arange(n), after.pred]).all()
    assert np.isnan(after.margins).sum() == n
    assert after.in_union.any() and not after.in_union.all()
    assert (after.hull_upper[:8] <= 1e-6).all() and (after.hull_lower[8:14] > 0).all()
    assert (after.support_idx[:, 0] >= 0).all()


def test_state_round_trip_without_files(guard: Guard, built: ob.Built, x_test: np.ndarray) -> None:
    """The fitted state is defined once: from_state(to_state()) scores bit for bit the same."""
    state = guard.to_state()
    assert state.params == guard.get_params()
    again = Guard.from_state(state, guard.model_)
    _assert_scores_identical(guard.score(x_test), again.score(x_test))
    assert again.to_state().fitted == state.fitted
    for name, arr in again.to_state().arrays.items():
        np.testing.assert_array_equal(arr, state.arrays[name], err_msg=name)
    with pytest.raises(InputError, match="not a guard state"):
        Guard.from_state(GuardState(state.params, state.fitted, {}, None))


def test_load_with_the_same_model(
    saved: Path, built: ob.Built, x_test: np.ndarray, guard: Guard
) -> None:
    for model in (built.data, OnnxClassifier(built.data)):
        loaded = load_artifact(saved, model)
        _assert_scores_identical(guard.score(x_test), loaded.score(x_test))
    path = saved.parent / "same.onnx"
    path.write_bytes(built.data)
    load_artifact(saved, path)
    load_artifact(saved, str(path))


def test_manifest_fields(guard: Guard, saved: Path, built: ob.Built) -> None:
    m = read_manifest(saved)
    assert m == json.loads((saved / "manifest.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION == 4
    assert m["guard_version"] == __version__
    assert m["model"]["sha256"] == hashlib.sha256(built.data).hexdigest()
    assert m["model"]["file"] == "model.onnx"
    assert m["model"]["input_name"] == "x"
    assert m["model"]["input_shape"] == [None, *ob.INPUT_SHAPE]
    assert (m["model"]["logits"], m["model"]["features"]) == ("logits", "h")
    assert m["n_features"] == ob.N_FEATURES
    assert m["n_classes"] == ob.N_CLASSES
    assert m["fitted"]["class_names"] == CLASS_NAMES
    assert m["fitted"]["nonneg"] is True and m["params"]["nonneg"] is None  # detected
    assert m["params"] == guard.get_params()
    assert set(m["arrays"]) == {p[:-4] for p in m["files"] if p.endswith(".npy")}
    created = dt.datetime.fromisoformat(m["created_at"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    assert m["counts"]["n_train"] == 200 and m["counts"]["n_labelled"] == 200
    assert (saved / "model.onnx").read_bytes() == built.data
    for name, digest in m["files"].items():
        assert hashlib.sha256((saved / name).read_bytes()).hexdigest() == digest
    digest = json.loads((saved / "digest.json").read_text())
    assert digest["algorithm"] == "sha256"
    assert set(digest["files"]) == {*m["files"], "manifest.json", "model.onnx"}


def test_no_pickle_anywhere(saved: Path) -> None:
    npys = sorted(saved.glob("*.npy"))
    assert {p.stem for p in npys} == {
        "W",
        "b",
        "train_features",
        "radii",
        "train_pred",
        "train_labels",
        "train_index",
        "reference_inputs",
        "reference_logits",
        "reference_features",
    }
    for p in npys:
        arr = np.load(p, allow_pickle=False)
        assert arr.dtype != object
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in saved.iterdir())


def test_no_leftover_temp_directories(guard: Guard, tmp_path: Path) -> None:
    save_artifact(guard, tmp_path / "a")
    save_artifact(guard, tmp_path / "a", overwrite=True)
    save_artifact(guard, tmp_path / "nested" / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "nested"]
    assert [p.name for p in (tmp_path / "nested").iterdir()] == ["b"]
    load_artifact(tmp_path / "a")


def test_save_refuses_existing_directory(guard: Guard, saved: Path) -> None:
    before = read_manifest(saved)["created_at"]
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(guard, saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["art"]
    assert read_manifest(saved)["created_at"] == before
    empty = saved.parent / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="overwrite"):
        save_artifact(guard, empty)


# --------------------------------------------------------------------------- strict loading
@pytest.mark.parametrize(
    "other",
    [
        lambda: ob.gemm_transb1(seed=SEED + 1).data,  # changed weights, same graph
        lambda: ob.matmul_add(seed=SEED).data,  # same function, another graph
    ],
    ids=["changed-weights", "other-builder"],
)
def test_load_with_another_model_is_refused(saved: Path, other) -> None:
    data = other()
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(saved, data)
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(saved, OnnxClassifier(data))


def test_default_guard_refuses_to_refit_over_another_models_artifact(saved: Path) -> None:
    """default_guard(path) refits a missing or stale default artifact, but an artifact of
    another model is someone's work: it is refused, and left as it was."""
    from guard.defaults import default_guard

    before = {f.name: f.read_bytes() for f in saved.iterdir()}
    with pytest.raises(ArtifactError, match="another model"):
        default_guard(saved, progress=False, device="cpu")
    assert {f.name: f.read_bytes() for f in saved.iterdir()} == before


def test_modified_model_file_is_refused(saved: Path) -> None:
    (saved / "model.onnx").write_bytes(ob.gemm_transb1(seed=SEED + 1).data)
    with pytest.raises(ArtifactError, match="model.onnx"):
        load_artifact(saved)


def test_corrupted_model_file_is_refused(saved: Path) -> None:
    data = bytearray((saved / "model.onnx").read_bytes())
    (saved / "model.onnx").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError, match="model.onnx"):
        load_artifact(saved)


def test_missing_model_file_is_refused(saved: Path) -> None:
    (saved / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx"):
        load_artifact(saved)


def test_modified_radii_are_refused(saved: Path) -> None:
    radii = np.load(saved / "radii.npy", allow_pickle=False)
    np.save(saved / "radii.npy", radii * 1.5, allow_pickle=False)
    with pytest.raises(ArtifactError, match="radii.npy"):
        load_artifact(saved)


def test_missing_array_is_refused(saved: Path) -> None:
    (saved / "train_features.npy").unlink()
    with pytest.raises(ArtifactError, match="train_features.npy"):
        load_artifact(saved)


def test_other_schema_version_is_refused(saved: Path) -> None:
    mpath = saved / "manifest.json"
    m = json.loads(mpath.read_text())
    m["schema_version"] = SCHEMA_VERSION + 1
    mpath.write_text(json.dumps(m))
    _reseal_digest(saved)  # as a later version would write it
    with pytest.raises(ArtifactError, match=f"artifact schema {SCHEMA_VERSION + 1}, "):
        read_manifest(saved)
    with pytest.raises(ArtifactError, match=f"reads schema {SCHEMA_VERSION}: refit"):
        load_artifact(saved)
    # An artifact of schema 2 had no digest: refused for its schema, not as corrupt.
    m["schema_version"] = 2
    mpath.write_text(json.dumps(m))
    (saved / "digest.json").unlink()
    with pytest.raises(ArtifactError, match="artifact schema 2, "):
        load_artifact(saved)


@pytest.mark.parametrize("drop", ["files", "params", "fitted", "arrays", "model"])
def test_manifest_missing_keys_is_refused(saved: Path, drop: str) -> None:
    mpath = saved / "manifest.json"
    m = json.loads(mpath.read_text())
    del m[drop]
    mpath.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="manifest.json was modified after fitting"):
        load_artifact(saved)
    _reseal_digest(saved)
    with pytest.raises(ArtifactError, match=rf"lacks \['{drop}'\]"):
        load_artifact(saved)


def test_manifest_not_an_object_is_refused(saved: Path) -> None:
    (saved / "manifest.json").write_text("[1, 2, 3]\n")
    _reseal_digest(saved)
    with pytest.raises(ArtifactError, match="a JSON list, expected an object"):
        load_artifact(saved)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_artifact(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt or incomplete"):
        load_artifact(tmp_path / "broken")  # no digest.json
    (tmp_path / "broken" / "digest.json").write_text("{}")
    _reseal_digest(tmp_path / "broken")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "broken")


# --------------------------------------------------------------------------- feature-only guard
def test_feature_only_guard_round_trips(
    built: ob.Built, x_train: np.ndarray, x_test: np.ndarray, tmp_path: Path
) -> None:
    feats = built.features(x_train).astype(np.float32)
    g = Guard(nonneg=True, hull_k=16, top_support=4, calib_fraction=0).fit_features(
        feats, built.W, built.b
    )
    path = save_artifact(g, tmp_path / "feat")
    assert not (path / "model.onnx").exists()
    m = read_manifest(path)
    assert m["model"] is None
    assert m["fitted"]["nonneg"] is True and m["params"]["nonneg"] is True
    assert m["fitted"]["class_names"] == [str(i) for i in range(ob.N_CLASSES)]
    assert m["counts"]["n_labelled"] == 0
    assert not (path / "train_labels.npy").exists()

    loaded = load_artifact(path)
    assert loaded.model_ is None and loaded.train_labels_ is None
    assert loaded.nonneg is True and loaded.top_support == 4
    q = built.features(x_test).astype(np.float32)
    before, after = g.score_features(q), loaded.score_features(q)
    _assert_scores_identical(before, after)
    assert after.support_idx.shape == (len(q), 4)
    # A model cannot be attached to a guard that was fitted without one.
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(path, built.data)
