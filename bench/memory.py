"""Benchmark 4: resident size of a fitted artifact vs the raw float32 feature matrix.

Each repeat loads the artifact in a fresh subprocess and reads its resident set size (``VmRSS``
from ``/proc/self/status``) at each step:

1. after the imports (numpy, faiss, onnxruntime, guard): the baseline;
2. after building the ONNX session (``OnnxClassifier``): the model's share;
3. after a first model run (onnxruntime's arena);
4. after ``guard.load_artifact`` (arrays + FAISS index): the artifact's share;
5. after a first geometry query on that image's features (as the server's self-check does),
   which builds whatever the geometry creates lazily, plus BLAS/FAISS work buffers.

It also counts the bytes of every structure the loaded guard holds (each numpy array once, the
FAISS index by its serialized size, the ONNX model bytes) and sums those kept per training point
for the hull queries ("index memory"). The issue's target is index memory <= 1.2 x the raw
feature matrix (``n_train x n_features x 4`` bytes).

With ``--server`` (default) it also starts ``python -m server`` on the artifact and reads the
serving process's RSS, against a process that only imports what the server imports.

Usage::

    python -m bench.memory [--artifact DIR] [--repeats 3] [--no-server] [--out-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/memory.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ServerProc, fmt_stat, stats, write_results

DEFAULT_ARTIFACT = "artifacts/fmnist_resnet"
TARGET_RATIO = 1.2
MB = 1e6


# ---------------------------------------------------------------------------- the child
def _walk_components(guard) -> list[dict]:
    """Every numpy array, FAISS index and model blob reachable from the guard (6 levels deep),
    each piece of memory counted once: FAISS indexes first (by their serialized size), then the
    arrays, largest first; an array whose memory was already counted (a view of the FAISS
    storage, or of another array) is listed with 0 bytes and what it shares memory with."""
    import faiss
    import numpy as np

    found: list[tuple[str, str, object]] = []
    visited: set[int] = set()

    def visit(obj, prefix: str, owner: str, depth: int) -> None:
        if isinstance(obj, (int, float, str, bool, type(None))):
            return
        if id(obj) in visited:  # reached twice (e.g. guard.hull_ after the hull itself)
            return
        visited.add(id(obj))
        if isinstance(obj, (np.ndarray, faiss.Index)) or (
            isinstance(obj, (bytes, bytearray)) and len(obj) > 4096
        ):
            found.append((prefix, owner, obj))
        elif isinstance(obj, dict) and depth > 0:
            for k, v in obj.items():
                visit(v, f"{prefix}[{k!r}]", owner, depth - 1)
        elif isinstance(obj, (list, tuple)) and depth > 0 and len(obj) < 64:
            for i, v in enumerate(obj):
                visit(v, f"{prefix}[{i}]", owner, depth - 1)
        elif hasattr(obj, "__dict__") and depth > 0 and type(obj).__module__.startswith("guard"):
            for k, v in vars(obj).items():
                visit(v, f"{prefix}.{k}", type(obj).__name__, depth - 1)

    # The hull first: objects it shares with the guard count as the hull's.
    visit(guard.hull_, "guard.hull_", "ConvexHullIndex", 2)
    # deep enough for the spherical hull (guard.hulls_.sphere_view, and its index where one
    # was built: ._index.index) and the OOD score's own (guard.ood_.detectors_[k]._view)
    visit(guard, "guard", "Guard", 6)

    ranges: list[tuple[int, int, str]] = []  # counted memory: [lo, hi) and its name
    out: list[dict] = []

    def storage(idx) -> tuple[int, int] | None:
        try:
            if hasattr(idx, "get_xb"):
                n = int(idx.ntotal) * int(idx.d)
                view = faiss.rev_swig_ptr(idx.get_xb(), max(n, 1))
                return view.__array_interface__["data"][0], n * view.itemsize
            if hasattr(idx, "codes"):
                view = faiss.rev_swig_ptr(idx.codes.data(), max(int(idx.codes.size()), 1))
                return view.__array_interface__["data"][0], int(idx.codes.size())
        except Exception:  # noqa: BLE001 - an index type without contiguous storage
            return None
        return None

    for prefix, owner, obj in found:
        if isinstance(obj, faiss.Index):
            idx = faiss.downcast_index(obj)
            st = storage(idx)
            if st is not None:
                ranges.append((st[0], st[0] + st[1], prefix))
            out.append(
                {
                    "component": prefix,
                    "owner": owner,
                    "kind": f"faiss {type(idx).__name__}",
                    "shape": f"{idx.ntotal}x{idx.d}",
                    "bytes": int(faiss.serialize_index(idx).nbytes),
                    "flat_bytes": int(idx.ntotal) * int(idx.d) * 4,
                }
            )
    arrays = sorted(
        ((p, o, a) for p, o, a in found if isinstance(a, np.ndarray)), key=lambda t: -t[2].nbytes
    )
    for prefix, owner, arr in arrays:
        if arr.nbytes == 0:
            continue
        lo = arr.__array_interface__["data"][0]
        hi = lo + arr.nbytes
        shared = next((name for a, z, name in ranges if lo < z and a < hi), None)
        out.append(
            {
                "component": prefix,
                "owner": owner,
                "kind": f"ndarray {arr.dtype}" + (f" (view of {shared})" if shared else ""),
                "shape": "x".join(map(str, arr.shape)),
                "bytes": 0 if shared else int(arr.nbytes),
            }
        )
        if not shared:
            ranges.append((lo, hi, prefix))
    for prefix, owner, obj in found:
        if isinstance(obj, (bytes, bytearray)):
            out.append(
                {
                    "component": prefix,
                    "owner": owner,
                    "kind": "bytes",
                    "shape": str(len(obj)),
                    "bytes": len(obj),
                }
            )
    return out


def child(artifact: str) -> dict:
    """Runs in a fresh process: RSS at each loading step, and the components' bytes."""
    import gc

    import faiss  # noqa: F401 - part of the baseline
    import numpy as np
    import onnxruntime  # noqa: F401

    from bench.common import peak_rss_bytes, rss_bytes
    from guard import OnnxClassifier, load_artifact

    gc.collect()
    rss = {"imports": rss_bytes()}
    path = Path(artifact)
    clf = OnnxClassifier(path / "model.onnx")
    gc.collect()
    rss["model"] = rss_bytes()
    shape = [1] + [d or 1 for d in clf.input_shape[1:]]
    logits, feats = clf.run(np.zeros(shape, dtype=np.float32))
    gc.collect()
    rss["model_run"] = rss_bytes()
    guard = load_artifact(path, clf)
    gc.collect()
    rss["loaded"] = rss_bytes()
    peak_load = peak_rss_bytes()
    stages = {}
    try:  # the stages of score_features one by one (internal API: skipped if it changed)
        from guard.geometry.margins import compute_margins

        r0 = rss_bytes()
        for name, fn in (
            (
                "margins (compute_margins)",
                lambda: compute_margins(feats, guard.W_, guard.b_, guard.nonneg_),
            ),
            (
                "hull distance (ConvexHullIndex.query)",
                lambda: guard.hull_.query(feats, top_support=guard.top_support),
            ),
            ("union of balls (UnionOfBalls.query)", lambda: guard.regions_.query(feats)),
        ):
            fn()
            gc.collect()
            r1 = rss_bytes()
            stages[name] = r1 - r0
            r0 = r1
    except Exception as exc:  # noqa: BLE001
        stages = {"(stage breakdown unavailable)": 0, "error": str(exc)[:200]}
    guard.decide(guard.score_features(feats, logits))
    gc.collect()
    rss["queried"] = rss_bytes()
    F = guard.train_features_
    return {
        "rss": rss,
        "peak_rss": peak_rss_bytes(),
        "peak_rss_after_load": peak_load,
        "n_train": int(F.shape[0]),
        "n_features": int(F.shape[1]),
        "raw_bytes": int(F.shape[0]) * int(F.shape[1]) * 4,
        "model_file_bytes": (path / "model.onnx").stat().st_size,
        "components": _walk_components(guard),
        "query_stages": stages,
    }


def baseline_server_imports() -> dict:
    """RSS of a process that imports what the server imports, and loads nothing."""
    import gc

    import faiss  # noqa: F401
    import grpc  # noqa: F401
    import onnxruntime  # noqa: F401

    import server.app  # noqa: F401
    from bench.common import rss_bytes

    gc.collect()
    return {"rss": rss_bytes()}


def _run_child(mode: str, artifact: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), mode, artifact],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {mode} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the parent
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description="Resident size of a fitted artifact vs the raw float32 feature matrix.",
    )
    p.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        help=f"artifact directory (default {DEFAULT_ARTIFACT})",
    )
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (3)")
    p.add_argument(
        "--no-server",
        dest="server",
        action="store_false",
        help="skip the RSS of a serving `python -m server` process",
    )
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--name", default="memory", help="result file stem (memory)")
    return p


def _is_index(c: dict) -> bool:
    """Structures the hull queries keep over the training set (the "index"): every hull's,
    the raw one's (ConvexHullIndex) and its views' (HullView: the spherical hull, the OOD
    score's hulls)."""
    return c["owner"] in ("ConvexHullIndex", "HullView")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1])))
        return 0
    if argv[:1] == ["--child-baseline"]:
        print(json.dumps(baseline_server_imports()))
        return 0
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("bench.memory: error: --repeats must be >= 1")
    artifact = Path(args.artifact)
    if not artifact.is_absolute():
        artifact = (Path.cwd() / artifact).resolve()
    if not (artifact / "manifest.json").is_file():
        raise SystemExit(f"bench.memory: error: {artifact} is not an artifact (no manifest.json)")

    runs = [_run_child("--child", str(artifact)) for _ in range(args.repeats)]
    first = runs[0]
    raw = first["raw_bytes"]
    n, d = first["n_train"], first["n_features"]

    def delta(a: str, b: str) -> dict:
        return stats((r["rss"][b] - r["rss"][a]) for r in runs)

    rss_rows = [
        {
            "step": "imports (numpy, faiss, onnxruntime, guard)",
            "rss_MB": stats(r["rss"]["imports"] / MB for r in runs),
            "delta_MB": "-",
            "delta_over_raw": "-",
        },
    ]
    prev = "imports"
    for step, label in (
        ("model", "ONNX session (OnnxClassifier)"),
        ("model_run", "first model run (onnxruntime arena)"),
        ("loaded", "load_artifact (arrays + FAISS index)"),
        (
            "queried",
            "first geometry query (lazy structures, BLAS/FAISS "
            "buffers, freed temporaries kept by malloc)",
        ),
    ):
        dl = delta(prev, step)
        rss_rows.append(
            {
                "step": label,
                "rss_MB": stats(r["rss"][step] / MB for r in runs),
                "delta_MB": {k: (v / MB if k != "n" else v) for k, v in dl.items()},
                "delta_over_raw": {k: (v / raw if k != "n" else v) for k, v in dl.items()},
            }
        )
        prev = step
    load_rss = stats((r["rss"]["loaded"] - r["rss"]["model_run"]) / raw for r in runs)
    artifact_rss = stats((r["rss"]["queried"] - r["rss"]["model_run"]) / raw for r in runs)
    total_rss = stats((r["rss"]["queried"] - r["rss"]["imports"]) / raw for r in runs)
    peak = stats((r["peak_rss_after_load"] - r["rss"]["model_run"]) / raw for r in runs)

    comps = sorted(first["components"], key=lambda c: -c["bytes"])
    total_b = sum(c["bytes"] for c in comps)
    comp_rows = [
        {
            "component": c["component"],
            "kind": c["kind"],
            "shape": c["shape"],
            "MB": c["bytes"] / MB,
            "over_raw": c["bytes"] / raw,
            "share_of_counted": c["bytes"] / total_b,
            "in_index": "yes" if _is_index(c) else "",
        }
        for c in comps
    ]
    index_b = sum(c["bytes"] for c in comps if _is_index(c))
    per_point_b = sum(
        c["bytes"]
        for c in comps
        if _is_index(c) or (c["kind"].startswith("ndarray") and c["shape"].split("x")[0] == str(n))
    )
    index_ratio = index_b / raw
    met = index_ratio <= TARGET_RATIO
    dominant = ", ".join(
        f"{c['component']} ({c['bytes'] / MB:.1f} MB = {c['bytes'] / raw:.2f}x raw)"
        for c in comps[:3]
    )

    summary = {
        "raw float32 feature matrix": f"{n} x {d} x 4 B = {raw / MB:.2f} MB",
        "index memory (hull structures: points + FAISS index + per-point caches) / raw": (
            index_ratio
        ),
        "all per-training-point structures / raw": per_point_b / raw,
        "all counted structures of the loaded guard / raw": total_b / raw,
        "RSS growth of load_artifact / raw": load_rss,
        "RSS growth of load_artifact + first geometry query / raw": artifact_rss,
        "RSS growth of ONNX session + model run + artifact + query / raw": total_rss,
        "peak RSS during load_artifact above the loaded model / raw": peak,
        "dominant structures": dominant,
        "target": (
            f"MET: index memory {index_ratio:.2f}x <= {TARGET_RATIO}x raw"
            if met
            else f"MISSED by {index_ratio - TARGET_RATIO:.2f}x raw: index memory "
            f"{index_ratio:.2f}x > {TARGET_RATIO}x ({index_b / MB:.1f} MB vs "
            f"{TARGET_RATIO * raw / MB:.1f} MB allowed)"
        ),
    }
    stage_rows = []
    for name in first.get("query_stages", {}):
        vals = [r["query_stages"].get(name) for r in runs]
        if all(isinstance(v, (int, float)) for v in vals):
            stage_rows.append(
                {
                    "first-query stage": name,
                    "rss_growth_MB": stats(v / MB for v in vals),
                    "over_raw": stats(v / raw for v in vals),
                }
            )
    sections = {
        "RSS of a fresh process loading the artifact": rss_rows,
        "RSS growth of the first geometry query, stage by stage": stage_rows,
    }
    if stage_rows:
        top_stage = max(stage_rows, key=lambda r: r["rss_growth_MB"]["median"])
        summary["largest first-query growth"] = (
            f"{top_stage['first-query stage']}: {fmt_stat(top_stage['rss_growth_MB'])} MB "
            f"({top_stage['over_raw']['median']:.2f}x raw; working memory the allocator keeps)"
        )

    if args.server:
        base = [_run_child("--child-baseline", str(artifact))["rss"] for _ in range(args.repeats)]
        serving = []
        for _ in range(args.repeats):
            with ServerProc(artifact, metrics=False) as srv:
                srv.wait_serving()
                serving.append(srv.rss())
        srv_rows = [
            {
                "process": "imports of the server (server.app, grpc, faiss, onnxruntime)",
                "rss_MB": stats(b / MB for b in base),
            },
            {
                "process": "python -m server, serving (after its self-check inference)",
                "rss_MB": stats(s / MB for s in serving),
            },
        ]
        grow = [(s - b) for s, b in zip(serving, base)]
        srv_rows.append(
            {
                "process": "difference: artifact + ONNX session + gRPC server",
                "rss_MB": stats(g / MB for g in grow),
            }
        )
        sections["Server process"] = srv_rows
        summary["server RSS growth over its imports / raw"] = stats(g / raw for g in grow)

    notes = [
        "RSS = VmRSS of /proc/<pid>/status (psutil is not used). Each repeat is a fresh process.",
        "Component bytes: each numpy array once (views of memory already counted are skipped; "
        "the hull's arrays are counted first, so a matrix shared by guard and hull counts as "
        "the hull's); FAISS indexes by their serialized size (for a flat index = ntotal x d x "
        "4 + a header); the ONNX model by its bytes (the session's own memory is the RSS step "
        "'ONNX session').",
        "The first query is one all-black image (as the server's self-check): far from the "
        "training data, so the union-of-balls range search returns many candidates. "
        "The first geometry query's growth is working memory (e.g. candidate points copied to "
        "float64 for an exact test) that glibc malloc keeps after it is freed; it is not held "
        "by any structure, but a server's RSS includes it.",
        "index memory = the structures of every hull: guard.hull_ (ConvexHullIndex: the "
        "training features the exact scan reads, the FAISS index, and any per-point caches) and "
        "its views (HullView: the spherical hull and the OOD score's hulls, which keep a scale "
        "per point and compute their rows on demand from the hull's features). When the "
        "features are a view of the FAISS index's storage they are counted once (listed with 0 "
        "bytes); a separate copy would count again. Memory the compiled core holds (its scratch) "
        "is not walked; the RSS rows include it.",
    ]
    jpath, mpath = write_results(
        args.name,
        comp_rows,
        args.out_dir,
        title="Benchmark 4: resident size of the artifact vs the raw feature matrix",
        sections=sections,
        summary=summary,
        notes=notes,
        rows_title="Bytes held by each structure of the loaded guard (after the first query)",
        config={"artifact": str(artifact), "repeats": args.repeats, "server": args.server},
    )
    for k, v in summary.items():
        print(f"{k}: {fmt_stat(v)}")
    print(f"TARGET (index memory <= {TARGET_RATIO} x raw feature matrix): {summary['target']}")
    print(f"wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
