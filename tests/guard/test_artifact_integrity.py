"""Integrity of an artifact at load: every file hashed (the manifest included), the model checked
against the fitted head and reference outputs, every fitted field validated, plain file names
only, and every corruption refused with one ``ArtifactError`` line (exit 2), never a traceback.

Two ways to corrupt an artifact: *edited* (a file changed, hashes left as they were: the digest
must catch it and name the file) and *resealed* (every hash recomputed afterwards, as a hand edit
followed by re-hashing or a buggy writer would leave it: the loader's own validation must catch
it). A forger who rewrites every hash is out of scope (see :mod:`guard.artifact`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from guard import cli as guard_cli
from guard.artifact import load_artifact, read_manifest, save_artifact
from guard.errors import ArtifactError, InputError
from guard.estimator import Guard, GuardState
from guard.model import OnnxClassifier

from . import onnx_builders as ob

SEED = 2
N_TRAIN = 400  # 100 held out: enough calibration samples for the default 1% flag rate
CLASS_NAMES = ["ant", "bee", "cat", "dog", "eel"]
DIGEST = "digest.json"
DELETE = object()  # _edit_manifest: remove the field


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def built() -> ob.Built:
    return ob.gemm_transb1(seed=SEED)


@pytest.fixture(scope="module")
def guard(built: ob.Built) -> Guard:
    """A guard with everything an artifact can hold: model, labels, calibration, OOD score."""
    x = ob.random_inputs(N_TRAIN, seed=31)
    y = np.random.default_rng(32).integers(0, ob.N_CLASSES, size=N_TRAIN)
    return Guard(hull_k=16, calib_fraction=0.25).fit(
        OnnxClassifier(built.data), x, y, class_names=CLASS_NAMES
    )


@pytest.fixture(scope="module")
def pristine(guard: Guard, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_artifact(guard, tmp_path_factory.mktemp("pristine") / "art")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "x.npz"
    np.savez(path, x=ob.random_inputs(6, seed=33))
    return path


@pytest.fixture()
def art(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pristine artifact to corrupt."""
    return Path(shutil.copytree(pristine, tmp_path / "art"))


# --------------------------------------------------------------------------- helpers
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def reseal(art: Path, changed: tuple[str, ...] = ()) -> None:
    """Recompute the hashes of the files in ``changed`` (manifest ``files`` / ``model.sha256``)
    and then the whole digest, so that only the loader's own validation can refuse the result.
    The manifest is rewritten only when ``changed`` is not empty (a manifest edit stays as is)."""
    mpath = art / "manifest.json"
    if changed and "manifest.json" not in changed:
        m = _json(mpath)
        files = m.get("files") if isinstance(m, dict) else None
        model = m.get("model") if isinstance(m, dict) else None
        for name in changed:
            if not (art / name).is_file():
                continue
            if isinstance(files, dict) and name in files:
                files[name] = _sha(art / name)
            if isinstance(model, dict) and model.get("file") == name:
                model["sha256"] = _sha(art / name)
        _write_json(mpath, m)
    dpath = art / DIGEST
    if dpath.is_file():
        d = _json(dpath)
        for name in d["files"]:
            if (art / name).is_file():
                d["files"][name] = _sha(art / name)
        _write_json(dpath, d)


def _edit_manifest(art: Path, path: tuple, value: Any) -> None:
    """Set (or, for ``DELETE``, remove) the manifest field at ``path`` (keys / list indices)."""
    mpath = art / "manifest.json"
    m = _json(mpath)
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _write_json(mpath, m)


def _get(m: Any, path: tuple) -> Any:
    for key in path:
        m = m[key]
    return m


def _assert_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = guard_cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("guard: error: "), err
    assert "Traceback" not in err and out == ""
    return lines[0]


def _with_scaled_initializer(data: bytes, name: str, scale: float) -> bytes:
    """The model with initializer ``name`` scaled (W1: the feature extractor; W: the head)."""
    proto = onnx.load_from_string(data)
    for i, t in enumerate(proto.graph.initializer):
        if t.name == name:
            arr = numpy_helper.to_array(t) * np.float32(scale)
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, name))
    return proto.SerializeToString()


# --------------------------------------------------------------------------- 1. manifest hashed
def test_every_file_is_in_the_digest_written_last(pristine: Path) -> None:
    d = _json(pristine / DIGEST)
    on_disk = {p.name for p in pristine.iterdir()} - {DIGEST}
    assert set(d["files"]) == on_disk and "manifest.json" in on_disk
    for name, digest in d["files"].items():
        assert _sha(pristine / name) == digest
    # written last: no file of the artifact is newer than the digest
    newest = max((pristine / name).stat().st_mtime_ns for name in on_disk)
    assert (pristine / DIGEST).stat().st_mtime_ns >= newest


def test_one_edited_byte_of_the_manifest_is_refused(art: Path) -> None:
    """The issue's example: params.target_abstain_rate 0.05 -> 0.35, one byte."""
    mpath = art / "manifest.json"
    text = mpath.read_text()
    assert text.count('"target_abstain_rate": 0.05') == 2  # params and thresholds
    mpath.write_text(text.replace('"target_abstain_rate": 0.05', '"target_abstain_rate": 0.35', 1))
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_artifact(art)


def test_edited_threshold_is_refused(art: Path) -> None:
    _edit_manifest(art, ("fitted", "thresholds", "d_min"), 1e9)  # would flag everything
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_artifact(art)


@pytest.mark.parametrize(
    "path, value",
    [
        (("fitted", "thresholds", "d_min"), 1e9),
        (("fitted", "thresholds", "hull"), 0.0),
        (("params", "target_abstain_rate"), 0.35),
        (("fitted", "thresholds", "target_abstain_rate"), 0.35),
        (("fitted", "lipschitz"), 1.0),
    ],
    ids=["d_min", "hull", "params-rate", "thresholds-rate", "lipschitz"],
)
def test_resealed_fitted_scalars_must_match_what_they_derive_from(
    art: Path, path: tuple, value: Any
) -> None:
    """Even with every hash recomputed, the thresholds must be those of the stored calibration
    scores at the stored rates, and the Lipschitz constant that of W."""
    _edit_manifest(art, path, value)
    reseal(art)
    with pytest.raises(ArtifactError, match=path[-1]):
        load_artifact(art)


def test_edited_digest_is_refused(art: Path) -> None:
    d = _json(art / DIGEST)
    d["files"]["radii.npy"] = "0" * 64
    _write_json(art / DIGEST, d)
    with pytest.raises(ArtifactError, match="radii.npy"):
        load_artifact(art)


def test_missing_digest_is_refused_as_corrupt(art: Path) -> None:
    (art / DIGEST).unlink()
    with pytest.raises(ArtifactError, match="corrupt"):
        load_artifact(art)
    with pytest.raises(ArtifactError, match="corrupt"):
        read_manifest(art)


def test_pristine_artifact_loads_and_round_trips(guard: Guard, pristine: Path) -> None:
    loaded = load_artifact(pristine)
    assert read_manifest(pristine)["fitted"]["class_names"] == CLASS_NAMES
    x = ob.random_inputs(10, seed=34)
    np.testing.assert_array_equal(loaded.score(x).hull_upper, guard.score(x).hull_upper)
    np.testing.assert_array_equal(loaded.reference_inputs_, guard.reference_inputs_)


# --------------------------------------------------------------------------- 2. model check
def test_reference_arrays_are_stored(guard: Guard, built: ob.Built) -> None:
    state = guard.to_state()
    ref_x = state.arrays["reference_inputs"]
    assert ref_x.dtype == np.float32 and ref_x.shape == (8, *ob.INPUT_SHAPE)
    assert state.arrays["reference_logits"].shape == (8, ob.N_CLASSES)
    assert state.arrays["reference_features"].shape == (8, ob.N_FEATURES)
    tol = {"rtol": 1e-5, "atol": 1e-5}  # float32 runs against float64 references
    np.testing.assert_allclose(state.arrays["reference_logits"], built.logits(ref_x), **tol)
    np.testing.assert_allclose(state.arrays["reference_features"], built.features(ref_x), **tol)


@pytest.mark.parametrize(
    "init, scale, match",
    [("W1", 1.5, "reference"), ("W", 1.01, "final layer")],
    ids=["other-backbone", "other-head"],
)
def test_swapped_model_with_updated_hashes_is_refused(
    art: Path, built: ob.Built, init: str, scale: float, match: str
) -> None:
    """A model swapped in with every hash updated: before the fix it served, with predictions
    that are not the argmax of its logits (the guard's W, b are not the model's)."""
    (art / "model.onnx").write_bytes(_with_scaled_initializer(built.data, init, scale))
    reseal(art, ("model.onnx",))
    with pytest.raises(ArtifactError, match=match) as info:
        load_artifact(art)
    assert "\n" not in str(info.value)


def test_from_state_checks_the_model(guard: Guard, built: ob.Built) -> None:
    state = guard.to_state()
    Guard.from_state(state, OnnxClassifier(built.data))  # the right model: fine
    for init, scale in (("W1", 1.5), ("W", 1.01), ("b", 2.0)):
        with pytest.raises(InputError, match="not the model this guard was fitted on"):
            Guard.from_state(
                state, OnnxClassifier(_with_scaled_initializer(built.data, init, scale))
            )
    # A state fitted on features has no references (and no affine error): no model can be
    # checked against it; a state with references must have its affine error.
    no_refs = {k: v for k, v in state.arrays.items() if not k.startswith("reference_")}
    features_only = GuardState(
        state.params, state.fitted | {"affine_error": None}, no_refs, state.ood
    )
    Guard.from_state(features_only)
    with pytest.raises(InputError, match="no reference inputs"):
        Guard.from_state(features_only, OnnxClassifier(built.data))
    with pytest.raises(InputError, match="affine_error"):
        Guard.from_state(GuardState(state.params, state.fitted, no_refs, state.ood))


def test_feature_only_guard_has_no_references_and_loads(built: ob.Built, tmp_path: Path) -> None:
    feats = built.features(ob.random_inputs(60, seed=35)).astype(np.float32)
    g = Guard(hull_k=8, calib_fraction=0).fit_features(feats, built.W, built.b)
    assert g.reference_inputs_ is None
    assert not any(k.startswith("reference_") for k in g.to_state().arrays)
    loaded = load_artifact(save_artifact(g, tmp_path / "feat"))
    assert loaded.model_ is None


# --------------------------------------------------------------------------- 3. fitted fields
@pytest.mark.parametrize("delta", [-1, 1], ids=["shorter", "longer"])
def test_class_names_of_the_wrong_length_are_refused(guard: Guard, art: Path, delta: int) -> None:
    names = CLASS_NAMES[:delta] if delta < 0 else [*CLASS_NAMES, "fox"]
    state = guard.to_state()
    bad = GuardState(state.params, state.fitted | {"class_names": names}, state.arrays, state.ood)
    with pytest.raises(InputError, match="class_names"):
        Guard.from_state(bad)
    _edit_manifest(art, ("fitted", "class_names"), names)
    reseal(art)
    with pytest.raises(ArtifactError, match="class_names"):
        load_artifact(art)


def test_to_state_refuses_what_from_state_would_refuse(guard: Guard) -> None:
    """save_artifact never writes an artifact that cannot be loaded."""
    g = Guard.from_state(guard.to_state())
    g.class_names_ = CLASS_NAMES[:2]
    with pytest.raises(InputError, match="class_names"):
        g.to_state()


# --------------------------------------------------------------------------- 4. plain names
@pytest.mark.parametrize(
    "name",
    ["../outside.onnx", "ABSOLUTE", "sub/model.onnx", "..", ".", "", "a\\b.onnx"],
    ids=["dotdot", "absolute", "subdir", "parent", "self", "empty", "backslash"],
)
def test_model_file_outside_the_artifact_is_refused(art: Path, name: str) -> None:
    outside = art.parent / "outside.onnx"
    shutil.copy(art / "model.onnx", outside)
    (art / "sub").mkdir()
    shutil.copy(art / "model.onnx", art / "sub" / "model.onnx")
    if name == "ABSOLUTE":
        name = str(outside)
    _edit_manifest(art, ("model", "file"), name)
    reseal(art)
    with pytest.raises(ArtifactError, match="plain file name"):
        load_artifact(art)


@pytest.mark.parametrize("where", ["files", "arrays", "digest"])
def test_every_named_file_must_be_a_plain_name(art: Path, where: str) -> None:
    outside = art.parent / "radii.npy"
    shutil.copy(art / "radii.npy", outside)
    if where == "files":
        m = _json(art / "manifest.json")
        m["files"]["../radii.npy"] = m["files"].pop("radii.npy")
        _write_json(art / "manifest.json", m)
    elif where == "arrays":
        m = _json(art / "manifest.json")
        m["arrays"][m["arrays"].index("radii")] = "../radii"
        m["files"]["../radii.npy"] = m["files"].pop("radii.npy")
        _write_json(art / "manifest.json", m)
    else:
        d = _json(art / DIGEST)
        d["files"]["../radii.npy"] = d["files"].pop("radii.npy")
        _write_json(art / DIGEST, d)
    if where != "digest":
        reseal(art)
    with pytest.raises(ArtifactError, match="plain file name"):
        load_artifact(art)


# --------------------------------------------------------------------------- 5. corruption matrix
# Every field of the manifest the writer produces; ``test_matrix_covers_every_manifest_field``
# keeps this list complete.
MANIFEST_FIELDS: list[tuple] = [
    (k,)
    for k in (
        "schema_version",
        "guard_version",
        "created_at",
        "model",
        "n_features",
        "n_classes",
        "counts",
        "params",
        "fitted",
        "arrays",
        "files",
    )
]
MANIFEST_FIELDS += [
    ("model", k) for k in ("file", "sha256", "input_name", "input_shape", "logits", "features")
]
MANIFEST_FIELDS += [("model", "input_shape", 1), ("counts", "n_train"), ("counts", "n_labelled")]
MANIFEST_FIELDS += [
    ("params", k)
    for k in (
        "nonneg",
        "hull_k",
        "hull_tol",
        "hull_max_rounds",
        "top_support",
        "batch_size",
        "calib_fraction",
        "target_abstain_rate",
        "target_flag_rate",
        "ambiguity_threshold",
        "seed",
        "ood",
    )
]
MANIFEST_FIELDS += [
    ("fitted", k) for k in ("class_names", "nonneg", "lipschitz", "thresholds", "affine_error")
]
MANIFEST_FIELDS += [("fitted", "class_names", 0)]
MANIFEST_FIELDS += [
    ("fitted", "thresholds", k)
    for k in ("ambiguity", "hull", "d_min", "target_abstain_rate", "target_flag_rate", "n_calib")
]
MANIFEST_FIELDS += [("arrays", 0), ("files", "W.npy"), ("files", "ood.npz")]
# Replacements that are valid values of the field (not corruptions): skipped.
VALID = {(("params", "nonneg"), "null"), (("fitted", "thresholds", "hull"), "null")}

ARRAYS = (
    "W",
    "b",
    "train_features",
    "radii",
    "train_pred",
    "train_index",
    "train_labels",
    "calib_hull",
    "calib_d_min",
    "calib_ambiguity",
    "reference_inputs",
    "reference_logits",
    "reference_features",
)
FILES = ("manifest.json", "model.onnx", "ood.npz", *(f"{a}.npy" for a in ARRAYS))


def _wrong_type(value: Any) -> Any:
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return "1"
    if isinstance(value, str):
        return 1
    if isinstance(value, list):
        return {"a": 1}
    if isinstance(value, dict):
        return [1]
    return "x"  # None


def _manifest_cases() -> list[tuple[str, Callable[[Path], tuple[str, ...]]]]:
    cases = []
    for path in MANIFEST_FIELDS:
        for kind in ("missing", "null", "wrong-type", "in-a-list"):
            if (path, kind) in VALID:
                continue

            def corrupt(art: Path, path: tuple = path, kind: str = kind) -> tuple[str, ...]:
                m = _json(art / "manifest.json")
                old = _get(m, path)
                if kind == "missing":
                    new = DELETE
                elif kind == "null":
                    new = None
                elif kind == "wrong-type":
                    new = _wrong_type(old)
                else:
                    new = [old] if not isinstance(old, list) else "x"
                _edit_manifest(art, path, new)
                return ()

            cases.append(("manifest:" + ".".join(map(str, path)) + ":" + kind, corrupt))
    return cases


def _npy_variant(kind: str) -> Callable[[np.ndarray], Any]:
    def wrong_dtype(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32 if a.dtype == np.float64 else np.float64)

    def bad_value(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        if a.dtype.kind == "f":
            a.reshape(-1)[0] = np.nan
        else:
            a.reshape(-1)[0] = -1
        return a

    return {
        "wrong-dtype": wrong_dtype,
        "int-dtype": lambda a: a.astype(np.int64) if a.dtype.kind == "f" else a.astype(np.uint8),
        "object-dtype": lambda a: a.astype(object),
        "wrong-shape": lambda a: a[:-1],
        "wrong-ndim": lambda a: a.reshape(-1) if a.ndim > 1 else a[:, None],
        "scalar": lambda a: a.reshape(-1)[0],
        "bad-value": bad_value,
    }[kind]


def _file_cases() -> list[tuple[str, Callable[[Path], tuple[str, ...]]]]:
    cases = []

    def add(name: str, kind: str, fn: Callable[[Path], None]) -> None:
        def corrupt(art: Path, fn: Callable[[Path], None] = fn, name: str = name) -> tuple:
            fn(art / name)
            return (name,)

        cases.append((f"file:{name}:{kind}", corrupt))

    def truncate(p: Path) -> None:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def empty(p: Path) -> None:
        p.write_bytes(b"")

    def directory(p: Path) -> None:
        p.unlink()
        p.mkdir()

    def garbage(p: Path) -> None:
        p.write_bytes(np.random.default_rng(0).bytes(max(64, p.stat().st_size)))

    for name in FILES:
        add(name, "truncated", truncate)
        add(name, "empty", empty)
        add(name, "directory", directory)
        add(name, "missing", Path.unlink)
        add(name, "garbage", garbage)
    for a in ARRAYS:
        for kind in (
            "wrong-dtype",
            "int-dtype",
            "object-dtype",
            "wrong-shape",
            "wrong-ndim",
            "scalar",
            "bad-value",
        ):

            def npy(p: Path, kind: str = kind) -> None:
                new = _npy_variant(kind)(np.load(p, allow_pickle=False))
                np.save(p, new, allow_pickle=True)

            add(f"{a}.npy", kind, npy)

        def npz_in_npy(p: Path) -> None:
            arr = np.load(p, allow_pickle=False)
            with open(p, "wb") as fh:
                np.savez(fh, arr=arr)

        add(f"{a}.npy", "npz-content", npz_in_npy)

    def ood_member(kind: str) -> Callable[[Path], None]:
        def fn(p: Path) -> None:
            with np.load(p, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
            if kind == "member-missing":
                del d["mean"]
            elif kind == "member-object":
                d["mean"] = d["mean"].astype(object)
            elif kind == "member-shape":
                d["mean"] = d["mean"][:-1]
            elif kind == "config-number":
                d["config"] = np.array(1.0)
            elif kind == "config-not-json":
                d["config"] = np.array("{not json")
            elif kind == "npy-content":
                with open(p, "wb") as fh:  # np.save(path) would append ".npy" to the name
                    np.save(fh, d["mean"])
                return
            with open(p, "wb") as fh:
                np.savez(fh, **d)

        return fn

    for kind in (
        "member-missing",
        "member-object",
        "member-shape",
        "config-number",
        "config-not-json",
        "npy-content",
    ):
        add("ood.npz", kind, ood_member(kind))
    for kind, data in (
        ("not-json", "{not json"),
        ("json-list", "[1, 2, 3]\n"),
        ("json-null", "null\n"),
        ("json-string", '"manifest"\n'),
    ):
        add("manifest.json", kind, lambda p, data=data: p.write_text(data))
    return cases


def _digest_cases() -> list[tuple[str, Callable[[Path], tuple[str, ...]]]]:
    """Corruptions of the digest itself (never resealed: resealing rewrites it)."""

    def edit(fn: Callable[[dict], Any]) -> Callable[[Path], tuple]:
        def corrupt(art: Path) -> tuple:
            d = _json(art / DIGEST)
            out = fn(d)
            _write_json(art / DIGEST, d if out is None else out)
            return ()

        return corrupt

    def raw(text: str | None) -> Callable[[Path], tuple]:
        def corrupt(art: Path) -> tuple:
            p = art / DIGEST
            if text is None:
                p.unlink()
                p.mkdir()
            else:
                p.write_text(text)
            return ()

        return corrupt

    return [
        ("digest:not-json", raw("{not json")),
        ("digest:empty", raw("")),
        ("digest:directory", raw(None)),
        ("digest:json-list", raw("[]")),
        ("digest:missing", lambda art: ((art / DIGEST).unlink(), ())[1]),
        ("digest:files-missing", edit(lambda d: d.pop("files"))),
        ("digest:files-list", edit(lambda d: d.update(files=list(d["files"])))),
        ("digest:algorithm", edit(lambda d: d.update(algorithm="md5"))),
        ("digest:entry-missing", edit(lambda d: d["files"].pop("W.npy"))),
        ("digest:manifest-missing", edit(lambda d: d["files"].pop("manifest.json"))),
        ("digest:entry-extra", edit(lambda d: d["files"].update({"extra.npy": "0" * 64}))),
        ("digest:hash-number", edit(lambda d: d["files"].update({"W.npy": 1}))),
        ("digest:hash-wrong", edit(lambda d: d["files"].update({"W.npy": "0" * 64}))),
        ("digest:name-slash", edit(lambda d: d["files"].update({"../W.npy": "0" * 64}))),
        ("digest:lists-itself", edit(lambda d: d["files"].update({DIGEST: "0" * 64}))),
    ]


MANIFEST_CASES = _manifest_cases()
FILE_CASES = _file_cases()
DIGEST_CASES = _digest_cases()
# resealed: every manifest and file corruption; edited: every file corruption (the digest must
# name the file) and the digest's own corruptions.
MATRIX = [(f"resealed:{cid}", fn, True) for cid, fn in MANIFEST_CASES + FILE_CASES]
MATRIX += [(f"edited:{cid}", fn, False) for cid, fn in FILE_CASES + MANIFEST_CASES[:8]]
MATRIX += [(f"edited:{cid}", fn, False) for cid, fn in DIGEST_CASES]


def test_matrix_covers_every_manifest_field(pristine: Path) -> None:
    m = read_manifest(pristine)

    def walk(obj: Any, prefix: tuple) -> list[tuple]:
        out = []
        for k, v in obj.items():
            out.append(prefix + (k,))
            if isinstance(v, dict) and k != "files":
                out += walk(v, prefix + (k,))
        return out

    fields = set(walk(m, ()))
    assert fields <= set(MANIFEST_FIELDS), sorted(map(str, fields - set(MANIFEST_FIELDS)))
    assert set(ARRAYS) == set(m["arrays"]) and set(FILES) == set(_json(pristine / DIGEST)["files"])
    assert len(MATRIX) >= 300


@pytest.mark.parametrize(
    "corrupt, resealed", [(fn, r) for _, fn, r in MATRIX], ids=[cid for cid, _, _ in MATRIX]
)
def test_corruption_is_one_line_exit_2(
    art: Path,
    inputs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    corrupt: Callable[[Path], tuple[str, ...]],
    resealed: bool,
) -> None:
    changed = corrupt(art)
    if resealed:
        reseal(art, changed)
    with pytest.raises(ArtifactError) as info:
        load_artifact(art)
    msg = str(info.value)
    assert "\n" not in msg
    if not resealed and changed:  # the digest names the file
        assert changed[0] in msg, msg
    out = str(tmp_path / "scores.npz")
    _assert_one_line_exit_2(["score", "--artifact", str(art), "--input", str(inputs),
                             "--out", out, "--no-progress"], capsys)  # fmt: skip
    _assert_one_line_exit_2(["info", "--artifact", str(art)], capsys)
    assert not Path(out).exists()


SERVE_CASES = [
    "resealed:manifest:fitted.class_names:wrong-type",
    "resealed:file:train_features.npy:object-dtype",
    "resealed:file:ood.npz:config-number",
    "resealed:manifest:model.file:null",
    "edited:file:manifest.json:truncated",
]


@pytest.mark.parametrize("cid", SERVE_CASES)
def test_serve_refuses_a_bad_artifact_before_serving(art: Path, cid: str) -> None:
    """``server.cli.main(["serve", ...])`` on a bad artifact returns 2 with one line and never
    serves. Run in a child process with a timeout, so that a regression (a bad artifact that
    loads and serves) fails the test instead of hanging it."""
    pytest.importorskip("grpc")
    _, corrupt, resealed = next(c for c in MATRIX if c[0] == cid)
    changed = corrupt(art)
    if resealed:
        reseal(art, changed)
    argv = ["serve", "--artifact", str(art), "--port", "0", "--metrics-port", "-1"]
    code = f"import sys; from server.cli import main; sys.exit(main({argv!r}))"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"guard serve did not refuse the artifact within 60 s: {exc.stdout!r}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("guard: error: "), proc.stderr
    assert "serving" not in proc.stdout
