"""Benchmark 3b (``python -m bench.serve --upstream``): Guard as a proxy in front of a real
Triton Inference Server, against calling Triton directly, in the same run.

The artifact is exported (``guard export triton``) and served by PyTriton's ``tritonserver``
(the Triton env, ``make triton``; onnxruntime inside a PyTriton callable). For each proxy
batching delay, two ``guard serve --upstream`` servers run beside it: guard ON (geometry) and
guard OFF (``--no-geometry``: forwarding only). Each cell (images per request ``b``, in-flight
requests ``c``) measures three targets with the closed loop of :func:`bench.serve.closed_loop`,
alternating their order per repeat:

* ``direct``: tritonclient -> Triton, asking for the logits and the features (what the proxy
  asks Triton for);
* ``off``: tritonclient -> Guard (no geometry) -> Triton;
* ``on``: tritonclient -> Guard (geometry and decisions) -> Triton.

Added latency = p50(target) - p50(direct) of the same repeat. The geometry's own cost is the ON
server's ``guard_geometry_seconds`` per batch over the same window (its histogram scraped around
it), so the forwarding cost of the ON path is ``added(on) - geometry``. Goal: that is <= 1 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ServerProc, fmt_stat, stats, write_results

GOAL_MS = 1.0
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TARGETS = ("direct", "off", "on")


def defaults(args: argparse.Namespace) -> argparse.Namespace:
    q = args.quick
    if args.concurrency is None:
        args.concurrency = [1] if q else [1, 8]
    if args.request_batch is None:
        args.request_batch = [1, 8]
    if args.batching is None:
        args.batching = [(64, 0.0)] if q else [(64, 0.0), (64, 2.0)]
    if args.min_window_s is None:
        args.min_window_s = 0.5 if q else 1.0
    if args.min_requests is None:
        args.min_requests = 20 if q else 50
    if args.name is None:
        args.name = "serve_upstream_quick" if q else "serve_upstream"
    return args


def _delta(before: dict, after: dict, name: str) -> float:
    n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    s = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return s / n if n > 0 else math.nan


def run(args: argparse.Namespace) -> dict:
    import tritonclient.grpc as grpcclient

    from bench.serve import closed_loop
    from guard import load_artifact
    from guard.datasets import as_model_input, load_fashion_mnist
    from guard.model.triton import export_triton
    from server.upstream.launcher import TritonHost

    artifact = Path(args.artifact).resolve()
    if not (artifact / "manifest.json").is_file():
        raise SystemExit(f"bench.serve: error: {artifact} is not an artifact (no manifest.json)")
    t_start = time.perf_counter()
    x = as_model_input(load_fashion_mnist("test")[0][: max(args.n_images, *args.request_batch)])
    model = artifact.name
    guard = load_artifact(artifact, device="cpu")
    assert guard.model_ is not None and guard.reference_inputs_ is not None
    measurements: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
        done = export_triton(guard.model_, Path(tmp) / "repo", model, guard.reference_inputs_)
        t = time.perf_counter()
        triton = TritonHost(done.directory.parent, [model], log=Path(tmp) / "triton.log").start()
        print(f"Triton serving {model!r} on {triton.target} ({time.perf_counter() - t:.1f} s)")
        try:
            direct = grpcclient.InferenceServerClient(url=triton.target)
            for mb, delay in args.batching:
                setting = f"{mb}x{delay:g}ms"
                extra = ["--upstream", triton.target, "--upstream-model", model]
                servers = {
                    g: ServerProc(
                        artifact,
                        geometry=g == "on",
                        max_batch_size=mb,
                        max_queue_delay_ms=delay,
                        model_name=model,
                        extra=extra,
                    )
                    for g in ("on", "off")
                }
                try:
                    for s in servers.values():
                        s.start()
                    for s in servers.values():
                        s.wait_serving()
                    clients = {
                        "direct": direct,
                        **{
                            g: grpcclient.InferenceServerClient(url=s.url)
                            for g, s in servers.items()
                        },
                    }
                    measurements += _cells(args, clients, servers, model, x, setting, closed_loop)
                    for g in ("on", "off"):
                        clients[g].close()
                finally:
                    for s in servers.values():
                        s.stop()
            direct.close()
        finally:
            triton.stop()
    return {"measurements": measurements, "elapsed_s": time.perf_counter() - t_start}


def _cells(args, clients, servers, model, x, setting, closed_loop) -> list[dict]:  # noqa: ANN001
    import tritonclient.grpc as grpcclient

    out = []
    for b in args.request_batch:
        inputs = []
        for lo in range(0, len(x) - b + 1, b):
            inp = grpcclient.InferInput("input", [b, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(np.ascontiguousarray(x[lo : lo + b]))
            inputs.append(inp)
        for c in args.concurrency:
            for r in range(args.repeats):
                order = TARGETS if r % 2 == 0 else TARGETS[::-1]
                for target in order:
                    probe = servers[target].scrape if target in servers else None
                    m = closed_loop(
                        clients[target] if target != "direct" else _Direct(clients["direct"]),
                        model,
                        inputs,
                        c,
                        b,
                        args,
                        probe=probe,
                    )
                    if probe is not None:
                        before, after = m.pop("probe_start"), m.pop("probe_end")
                        m["srv_geometry"] = _delta(before, after, "guard_geometry_seconds")
                        m["srv_upstream"] = _delta(before, after, "guard_upstream_seconds")
                        m["srv_queue"] = _delta(before, after, "guard_queue_seconds")
                        m["srv_batch"] = _delta(before, after, "guard_batch_size")
                    m.update(
                        {"setting": setting, "req_batch": b, "concurrency": c, "target": target}
                    )
                    m["repeat"] = r
                    out.append(m)
            cell = [m for m in out if (m["req_batch"], m["concurrency"]) == (b, c)]
            p50 = {
                t: 1e3 * float(np.median([m["p50"] for m in cell if m["target"] == t]))
                for t in TARGETS
            }
            print(
                f"{setting} b={b} c={c}: p50 direct {p50['direct']:.2f} ms, proxy off "
                f"{p50['off']:.2f} ms (+{p50['off'] - p50['direct']:.2f}), proxy on "
                f"{p50['on']:.2f} ms (+{p50['on'] - p50['direct']:.2f})",
                flush=True,
            )
    return out


class _Direct:
    """The Triton client asking for the two outputs the proxy asks Triton for."""

    def __init__(self, client) -> None:  # noqa: ANN001
        import tritonclient.grpc as grpcclient

        self.client = client
        self.outputs = [
            grpcclient.InferRequestedOutput("logits"),
            grpcclient.InferRequestedOutput("features"),
        ]

    def async_infer(self, model, inputs, callback, client_timeout):  # noqa: ANN001, ANN201
        return self.client.async_infer(
            model, inputs, callback=callback, outputs=self.outputs, client_timeout=client_timeout
        )


def summarize(res: dict) -> dict:
    ms = res["measurements"]
    rows, verdicts = [], []
    summary: dict = {
        "goal": f"p50(proxy, guard on) - p50(Triton direct) <= geometry per batch + {GOAL_MS} ms"
    }
    cells = sorted({(m["setting"], m["req_batch"], m["concurrency"]) for m in ms})
    for setting, b, c in cells:
        sel = [m for m in ms if (m["setting"], m["req_batch"], m["concurrency"]) == (setting, b, c)]
        by = {t: {m["repeat"]: m for m in sel if m["target"] == t} for t in TARGETS}
        reps = sorted(set(by["direct"]) & set(by["on"]) & set(by["off"]))
        on = [by["on"][r] for r in reps]
        row = {
            "setting": setting,
            "req_batch": b,
            "concurrency": c,
            "p50_direct_ms": stats(1e3 * by["direct"][r]["p50"] for r in reps),
            "p50_off_ms": stats(1e3 * by["off"][r]["p50"] for r in reps),
            "p50_on_ms": stats(1e3 * by["on"][r]["p50"] for r in reps),
            "added_off_ms": stats(
                1e3 * (by["off"][r]["p50"] - by["direct"][r]["p50"]) for r in reps
            ),
            "added_on_ms": stats(1e3 * (by["on"][r]["p50"] - by["direct"][r]["p50"]) for r in reps),
            "geometry_ms_per_batch": stats(1e3 * m["srv_geometry"] for m in on),
            "on_added_minus_geometry_ms": stats(
                1e3 * (by["on"][r]["p50"] - by["direct"][r]["p50"] - by["on"][r]["srv_geometry"])
                for r in reps
            ),
            "upstream_ms_per_batch_on": stats(1e3 * m["srv_upstream"] for m in on),
            "queue_ms_on": stats(1e3 * m["srv_queue"] for m in on),
            "merged_batch_on": stats(m["srv_batch"] for m in on),
            "p99_direct_ms": stats(1e3 * by["direct"][r]["p99"] for r in reps),
            "p99_on_ms": stats(1e3 * by["on"][r]["p99"] for r in reps),
            "errors": int(sum(m["errors"] for m in sel)),
        }
        rows.append(row)
        if c == 1:
            fwd = row["on_added_minus_geometry_ms"]["median"]
            off = row["added_off_ms"]["median"]
            added = row["added_on_ms"]["median"]
            geo = row["geometry_ms_per_batch"]["median"]
            verdict = (
                f"{'MET' if fwd <= GOAL_MS else 'MISSED'}: added p50 {added:.2f} ms = geometry "
                f"{geo:.2f} ms + {fwd:.2f} ms forwarding (forwarding alone, guard off: "
                f"+{off:.2f} ms)"
            )
            summary[f"{setting}, {b} image(s)/request, 1 in flight"] = verdict
            verdicts.append((setting, b, verdict))
    summary["benchmark wall time s"] = res["elapsed_s"]
    return {"rows": rows, "summary": summary, "verdicts": verdicts}


def main(args: argparse.Namespace) -> int:
    args = defaults(args)
    res = run(args)
    out = summarize(res)
    notes = [
        "direct = tritonclient.grpc -> Triton (PyTriton 0.7.0's tritonserver 2.51, the exported "
        "model.onnx run by onnxruntime in a PyTriton callable), asking for logits and features; "
        "off / on = tritonclient.grpc -> guard serve --upstream (--no-geometry / geometry on) -> "
        "the same Triton. All three in the same run, alternating order per repeat; added = "
        "p50(target) - p50(direct) of the same repeat, then median [min, max] over repeats.",
        "geometry_ms_per_batch, upstream_ms_per_batch_on, queue_ms_on, merged_batch_on: means "
        "over the measuring window from the ON server's histograms (guard_geometry_seconds, "
        "guard_upstream_seconds, guard_queue_seconds, guard_batch_size).",
        "The proxy's batching delay (setting MAXBATCHxDELAY) is waited in full when fewer "
        "requests than a batch are in flight: at 1 in flight a 2 ms delay adds ~2 ms by design; "
        "the 0 ms setting shows the forwarding cost itself.",
        "Triton, both proxies and the Python client share this machine's cores (and other "
        "jobs): absolute figures are noisy; the same-run differences are what is compared.",
    ]
    config = {
        k: (v if not isinstance(v, list) else [list(t) if isinstance(t, tuple) else t for t in v])
        for k, v in vars(args).items()
    }
    # inherited by Triton and both proxies (the command line does not show them)
    config["thread_env"] = {k: os.environ.get(k) for k in _THREAD_ENV if k in os.environ}
    jpath, mpath = write_results(
        args.name,
        out["rows"],
        args.out_dir,
        title="Benchmark 3b: Guard as a proxy in front of a real Triton (upstream mode) vs "
        "Triton directly",
        summary=out["summary"],
        notes=notes,
        config=config,
    )
    print()
    for k, v in out["summary"].items():
        print(f"{k}: {fmt_stat(v)}")
    print(f"wrote {jpath} and {mpath}")
    return 0
