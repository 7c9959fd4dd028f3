"""Benchmark 3: end to end through gRPC with the real client (``tritonclient.grpc``).

For each batching setting (``max_batch_size`` x ``max_queue_delay_ms``) two servers of the same
artifact run side by side as subprocesses: guard ON (geometry) and guard OFF (``--no-geometry``:
the same server and model, logits/prediction only). Only one is loaded at a time; their
measurements alternate (ON, OFF, OFF, ON, ...) so that slow drift of a shared machine hits both
alike, and every ratio ON/OFF is taken between the two halves of one repeat.

Each measurement is a closed loop of ``c`` concurrent in-flight requests (``async_infer`` with
callbacks on one ``InferenceServerClient``; a completed request immediately sends the next) of
``b`` real Fashion-MNIST test images (raw FP32). It has three phases:

* warm-up: until ``--min-warmup-s`` has passed and ``c`` requests have completed (every slot
  went round once, so the queue is in its steady state);
* window: until ``--min-window-s`` has passed and ``--window-rounds`` x ``c`` more requests
  completed; throughput = images completed in the window / its length, latency percentiles over
  the requests completed in the window;
* drain: the requests still in flight finish (unmeasured) so the next measurement starts idle.

Concurrency levels stop at saturation: once ``c * b >= --saturation-factor x max_batch_size``
in-flight images (by default two full merged batches: one running, one waiting), higher levels
of that request size are skipped for both servers. The batcher cannot merge more than
``max_batch_size`` images, so more concurrency only lengthens the queue (latency grows as
``c * b / throughput``, by Little's law) while each guard-ON measurement would take seconds
(``--all-cells`` runs them anyway).

The server's own Prometheus histograms are scraped around each measurement, giving per cell the
mean merged batch size, queue wait, model time and geometry time: what the served latency is
made of.

The floor: the bare onnxruntime model in this process (``OnnxClassifier.run``) on the same
images at batch 1, 8 and 64, and the whole guard in-process (model + geometry + decisions).

The servers are subprocesses (``python -m server``), as in production: the client's Python
work never shares a GIL with theirs, and their RSS and start-up are their own.

Usage::

    python -m bench.serve [--quick] [--artifact DIR] [--out-dir bench/results]
    python -m bench.serve --upstream [--quick]   # Guard in front of a real Triton vs Triton
                                                  # directly (bench/serve_upstream.py)
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as ``python bench/serve.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ServerProc, fmt_stat, rate, stats, timeit, write_results

DEFAULT_ARTIFACT = "artifacts/fmnist_resnet"
TARGET_RATIO = 0.8


# ---------------------------------------------------------------------------- command line
def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _batching(text: str) -> list[tuple[int, float]]:
    out = []
    for item in text.split(","):
        if item.strip():
            mb, _, delay = item.strip().partition("x")
            out.append((int(mb), float(delay)))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.serve",
        description="End-to-end gRPC benchmark with tritonclient: guard ON vs OFF at several "
        "concurrency levels and batching settings, and the in-process onnxruntime floor.",
    )
    p.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        help=f"artifact directory (default {DEFAULT_ARTIFACT})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="about one minute: one batching setting, fewer concurrency levels",
    )
    p.add_argument(
        "--concurrency", type=_ints, help="in-flight requests (default 1,4,16,64; quick: 1,4,16)"
    )
    p.add_argument("--request-batch", type=_ints, help="images per request (default 1,8)")
    p.add_argument(
        "--batching",
        type=_batching,
        help="server settings MAXBATCHxDELAYMS, comma separated (default "
        "8x1,8x5,64x1,64x5; quick: 64x1)",
    )
    p.add_argument(
        "--geometry-threads",
        type=int,
        help="the guard-ON server's --geometry-threads (default: the server's, every core)",
    )
    p.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (3)")
    p.add_argument("--min-warmup-s", type=float, default=0.2)
    p.add_argument(
        "--min-window-s",
        type=float,
        default=None,
        help="shortest measuring window (0.5 s; quick 0.3 s)",
    )
    p.add_argument(
        "--window-rounds",
        type=float,
        default=2.0,
        help="the window also lasts until ROUNDS x concurrency requests completed (2)",
    )
    p.add_argument(
        "--min-requests",
        type=int,
        default=None,
        help="the window also lasts until this many requests completed (10; quick 6)",
    )
    p.add_argument("--max-window-s", type=float, default=30.0)
    p.add_argument(
        "--saturation-factor",
        type=float,
        default=2.0,
        help="stop raising the concurrency once concurrency x images per request "
        ">= FACTOR x max_batch_size (2: one batch running, one full batch waiting)",
    )
    p.add_argument(
        "--all-cells",
        action="store_true",
        help="run every concurrency level, even beyond saturation",
    )
    p.add_argument(
        "--n-images",
        type=int,
        default=512,
        help="distinct Fashion-MNIST test images cycled through (512)",
    )
    p.add_argument("--floor-batches", type=_ints, help="in-process floor batch sizes (1,8,64)")
    p.add_argument("--floor-repeats", type=int, default=5)
    p.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the in-process floor"
    )
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--name", help="result file stem (default serve, quick: serve_quick)")
    p.add_argument(
        "--upstream",
        action="store_true",
        help="upstream mode (bench/serve_upstream.py): Guard as a proxy in front of a real "
        "Triton (the Triton env, `make triton`) vs Triton directly: the proxy's added p50 "
        "latency per request (default concurrency 1,8; batching 64x0,64x2; result "
        "serve_upstream)",
    )
    return p


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    q = args.quick
    if args.concurrency is None:
        args.concurrency = [1, 4, 16] if q else [1, 4, 16, 64]
    if args.request_batch is None:
        args.request_batch = [1, 8]
    if args.batching is None:
        args.batching = [(64, 1.0)] if q else [(8, 1.0), (8, 5.0), (64, 1.0), (64, 5.0)]
    if args.floor_batches is None:
        args.floor_batches = [1, 8, 64]
    if args.min_window_s is None:
        args.min_window_s = 0.3 if q else 0.5
    if args.min_requests is None:
        args.min_requests = 6 if q else 10
    if args.name is None:
        args.name = "serve_quick" if q else "serve"
    bad = [
        n for n in ("repeats", "n_images", "floor_repeats", "min_requests") if getattr(args, n) < 1
    ]
    if bad or min(args.concurrency + args.request_batch) < 1 or not args.batching:
        raise SystemExit(
            f"bench.serve: error: {bad or 'concurrency/request-batch/batching'} must be >= 1"
        )
    return args


# ---------------------------------------------------------------------------- load generator
@dataclass
class _Run:
    """State of one closed-loop measurement, updated from tritonclient's callback thread."""

    concurrency: int
    min_warmup_s: float
    min_window_s: float
    window_rounds: float
    max_window_s: float
    min_requests: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    slots: threading.Semaphore | None = None
    t0: float = 0.0
    phase: str = "warmup"
    t_window: float = math.nan
    t_end: float = math.nan
    done: int = 0
    done_at_window: int = 0
    done_at_end: int = 0
    window_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.slots = threading.Semaphore(self.concurrency)

    def completed(self, t_send: float, result=None, error=None) -> None:
        now = time.perf_counter()
        with self.lock:
            self.done += 1
            if error is not None:
                self.errors.append(str(error))
            elif self.phase == "window":
                self.window_latencies.append(now - t_send)
            if self.phase == "warmup":
                if now - self.t0 >= self.min_warmup_s and self.done >= self.concurrency:
                    self.phase, self.t_window, self.done_at_window = "window", now, self.done
            elif self.phase == "window":
                n = self.done - self.done_at_window
                span = now - self.t_window
                if (
                    span >= self.min_window_s
                    and n >= self.min_requests
                    and n >= self.window_rounds * self.concurrency
                ) or span >= self.max_window_s:
                    self.phase, self.t_end, self.done_at_end = "done", now, self.done
        self.slots.release()


def closed_loop(
    client,
    model: str,
    inputs: list,
    concurrency: int,
    batch: int,
    args: argparse.Namespace,
    probe=None,
) -> dict:
    """One measurement; returns throughput (images/s), latencies (s) and error count.

    ``probe()`` (e.g. a scrape of the server's metrics) is called when the window opens and
    when it closes; its two results come back as ``probe_start`` / ``probe_end``.
    """
    run = _Run(
        concurrency,
        args.min_warmup_s,
        args.min_window_s,
        args.window_rounds,
        args.max_window_s,
        min_requests=args.min_requests,
    )
    run.t0 = time.perf_counter()
    probes: dict = {}
    i = 0
    sent = 0
    while True:
        run.slots.acquire()
        if probe is not None and run.phase != "warmup" and "probe_start" not in probes:
            probes["probe_start"] = probe()
        if run.phase == "done":
            if probe is not None:
                probes["probe_end"] = probe()
            run.slots.release()
            break
        inp = inputs[i % len(inputs)]
        i += 1
        client.async_infer(
            model,
            [inp],
            callback=functools.partial(run.completed, time.perf_counter()),
            client_timeout=120.0,
        )
        sent += 1
        if len(run.errors) > 100:
            break
    drained = 0  # let every in-flight request finish, so the next measurement starts idle
    deadline = time.monotonic() + 180.0
    while drained < concurrency and time.monotonic() < deadline:
        if run.slots.acquire(timeout=1.0):
            drained += 1
    if run.phase != "done":
        raise RuntimeError(f"measurement did not finish: {run.errors[:3]}")
    span = run.t_end - run.t_window
    n_req = run.done_at_end - run.done_at_window
    lat = np.asarray(run.window_latencies)
    return {
        "throughput": n_req * batch / span if span > 0 else math.nan,
        "p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
        "p99": float(np.percentile(lat, 99)) if lat.size else math.nan,
        "mean_latency": float(lat.mean()) if lat.size else math.nan,
        "requests": int(n_req),
        "window_s": span,
        "errors": len(run.errors),
        "first_error": run.errors[0] if run.errors else None,
        **probes,
    }


# ---------------------------------------------------------------------------- server metrics
_HIST = {
    "queue": "guard_queue_seconds",
    "model": "guard_model_seconds",
    "geometry": "guard_geometry_seconds",
    "batch": "guard_batch_size",
}


def metric_delta(before: dict, after: dict, span_s: float) -> dict:
    """Means over one measuring window from the server's histograms: ``queue`` per request,
    ``model`` / ``geometry`` per batch, ``batch`` images per merged batch; ``busy_model`` /
    ``busy_geometry`` = share of the window's wall time the batch worker spent in each."""
    out = {}
    for key, name in _HIST.items():
        n = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        s = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        out[key] = s / n if n > 0 else math.nan
        if key in ("model", "geometry"):
            out[f"busy_{key}"] = s / span_s if span_s > 0 else math.nan
    return out


# ---------------------------------------------------------------------------- floor
def floor_rows(artifact: Path, x: np.ndarray, batches: list[int], repeats: int) -> list[dict]:
    """The bare model in-process, then the whole guard in-process, on the same images."""
    from guard import OnnxClassifier, load_artifact

    rows = []
    clf = OnnxClassifier(artifact / "model.onnx")
    for b in batches:
        n = max(b, min(len(x), 256) // b * b)
        xs = x[:n]
        s = timeit(lambda xs=xs, b=b: clf.run(xs, batch_size=b), repeats=repeats, warmup=1)
        rows.append(
            {
                "what": "onnxruntime model (floor)",
                "batch": b,
                "images": n,
                "images_per_s": rate(s, n),
                "ms_per_batch": _ms(rate_to_latency(s, n, b)),
            }
        )
    guard = load_artifact(artifact, clf)
    for b in batches:
        n = b if b > 1 else 8
        xs = x[:n]

        def full(xs=xs, b=b) -> None:
            for lo in range(0, len(xs), b):
                guard.decide(guard.score(xs[lo : lo + b]))

        s = timeit(full, repeats=max(2, repeats // 2), warmup=1)
        rows.append(
            {
                "what": "guard in-process (model + geometry + decide)",
                "batch": b,
                "images": n,
                "images_per_s": rate(s, n),
                "ms_per_batch": _ms(rate_to_latency(s, n, b)),
            }
        )
    return rows


def rate_to_latency(s: dict, n: int, b: int) -> dict:
    """Seconds per call of ``n`` images -> seconds per batch of ``b``."""
    k = b / n
    return {"median": s["median"] * k, "min": s["min"] * k, "max": s["max"] * k, "n": s["n"]}


def _nz(v: float) -> float:
    """NaN (no geometry histogram: guard OFF) as 0."""
    return 0.0 if v is None or not np.isfinite(v) else float(v)


def _ms(s: dict) -> dict:
    return {k: (v * 1e3 if k != "n" else v) for k, v in s.items()}


# ---------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    artifact = Path(args.artifact)
    if not artifact.is_absolute():
        artifact = (Path.cwd() / artifact).resolve()
    if not (artifact / "manifest.json").is_file():
        raise SystemExit(
            f"bench.serve: error: {artifact} is not an artifact (no manifest.json); "
            f"fit it with guard.defaults.default_guard or `guard fit`"
        )
    from guard.datasets import as_model_input, load_fashion_mnist

    t_start = time.perf_counter()
    x_test = load_fashion_mnist("test")[0]
    x = to_input_layout(
        as_model_input(x_test[: max(args.n_images, max(args.request_batch))]), artifact
    )

    floor = []
    if args.floor:
        print("floor: onnxruntime in-process ...", flush=True)
        floor = floor_rows(artifact, x, args.floor_batches, args.floor_repeats)
        for r in floor:
            print(
                f"  {r['what']:<45} batch {r['batch']:>3}: {fmt_stat(r['images_per_s'])} images/s",
                flush=True,
            )

    import tritonclient.grpc as grpcclient  # only now: `--help` and the floor stay light

    model = artifact.name
    measurements: list[dict] = []
    skipped: list[dict] = []
    startup = []
    for mb, delay in args.batching:
        setting = f"{mb}x{delay:g}ms"
        servers = {
            "on": ServerProc(
                artifact,
                geometry=True,
                max_batch_size=mb,
                max_queue_delay_ms=delay,
                model_name=model,
                extra=(
                    []
                    if args.geometry_threads is None
                    else ["--geometry-threads", str(args.geometry_threads)]
                ),
            ),
            "off": ServerProc(
                artifact,
                geometry=False,
                max_batch_size=mb,
                max_queue_delay_ms=delay,
                model_name=model,
            ),
        }
        try:
            for s in servers.values():
                s.start()
            for s in servers.values():
                s.wait_serving()
            startup += [servers["on"].startup_s, servers["off"].startup_s]
            clients = {k: grpcclient.InferenceServerClient(url=s.url) for k, s in servers.items()}
            md = clients["on"].get_model_metadata(model, as_json=True)
            input_name = md["inputs"][0]["name"]
            for b in args.request_batch:
                inputs = []
                for lo in range(0, len(x) - b + 1, b):
                    inp = grpcclient.InferInput(input_name, [b, *x.shape[1:]], "FP32")
                    inp.set_data_from_numpy(np.ascontiguousarray(x[lo : lo + b]))
                    inputs.append(inp)
                saturated_at: int | None = None  # first concurrency with c*b >= factor*mb
                for c in args.concurrency:
                    if saturated_at is not None and not args.all_cells:
                        skipped.append(
                            {
                                "setting": setting,
                                "req_batch": b,
                                "concurrency": c,
                                "in_flight_images": c * b,
                                "saturated_at_concurrency": saturated_at,
                            }
                        )
                        print(
                            f"{setting} b={b} c={c}: skipped ({c * b} in-flight images; "
                            f"saturated from c={saturated_at})",
                            flush=True,
                        )
                        continue
                    if c * b >= args.saturation_factor * mb:
                        saturated_at = c
                    for r in range(args.repeats):
                        order = ("on", "off") if r % 2 == 0 else ("off", "on")
                        for guard in order:
                            m = closed_loop(
                                clients[guard],
                                model,
                                inputs,
                                c,
                                b,
                                args,
                                probe=servers[guard].scrape,
                            )
                            delta = metric_delta(
                                m.pop("probe_start"), m.pop("probe_end"), m["window_s"]
                            )
                            m.update({f"srv_{k}": v for k, v in delta.items()})
                            m.update(
                                {
                                    "setting": setting,
                                    "max_batch_size": mb,
                                    "max_queue_delay_ms": delay,
                                    "req_batch": b,
                                    "concurrency": c,
                                    "guard": guard,
                                    "repeat": r,
                                }
                            )
                            measurements.append(m)
                    cell = [
                        m
                        for m in measurements
                        if m["setting"] == setting and m["req_batch"] == b and m["concurrency"] == c
                    ]
                    t_on = np.median([m["throughput"] for m in cell if m["guard"] == "on"])
                    t_off = np.median([m["throughput"] for m in cell if m["guard"] == "off"])
                    print(
                        f"{setting} b={b} c={c}: ON {t_on:8.1f} images/s, OFF {t_off:8.1f} "
                        f"images/s, ratio {t_on / t_off:.3f}  "
                        f"[{time.perf_counter() - t_start:.0f} s]",
                        flush=True,
                    )
            for cl in clients.values():
                cl.close()
        finally:
            codes = {k: s.stop() for k, s in servers.items()}
        if any(codes.values()):
            print(f"warning: server exit codes {codes}", flush=True)
    return {
        "floor": floor,
        "measurements": measurements,
        "skipped": skipped,
        "startup": startup,
        "elapsed_s": time.perf_counter() - t_start,
    }


def summarize(args: argparse.Namespace, res: dict) -> dict:
    ms = res["measurements"]
    cells = sorted(
        {
            (m["max_batch_size"], m["max_queue_delay_ms"], m["req_batch"], m["concurrency"])
            for m in ms
        }
    )
    rows, ratio_rows, breakdown = [], [], []
    for mb, delay, b, c in cells:
        sel = [
            m
            for m in ms
            if (m["max_batch_size"], m["max_queue_delay_ms"], m["req_batch"], m["concurrency"])
            == (mb, delay, b, c)
        ]
        setting = sel[0]["setting"]
        by = {
            g: sorted((m for m in sel if m["guard"] == g), key=lambda m: m["repeat"])
            for g in ("on", "off")
        }
        for g in ("on", "off"):
            mm = by[g]
            rows.append(
                {
                    "setting": setting,
                    "req_batch": b,
                    "concurrency": c,
                    "guard": g,
                    "images_per_s": stats(m["throughput"] for m in mm),
                    "p50_ms": stats(1e3 * m["p50"] for m in mm),
                    "p99_ms": stats(1e3 * m["p99"] for m in mm),
                    "requests": int(sum(m["requests"] for m in mm)),
                    "errors": int(sum(m["errors"] for m in mm)),
                    "merged_batch": stats(m["srv_batch"] for m in mm),
                    "queue_ms": stats(1e3 * m["srv_queue"] for m in mm),
                    "model_ms_per_batch": stats(1e3 * m["srv_model"] for m in mm),
                    "geometry_ms_per_batch": stats(1e3 * m["srv_geometry"] for m in mm),
                }
            )
        pairs = [(on, off) for on in by["on"] for off in by["off"] if on["repeat"] == off["repeat"]]
        ratio_rows.append(
            {
                "setting": setting,
                "req_batch": b,
                "concurrency": c,
                "throughput_on_over_off": stats(
                    on["throughput"] / off["throughput"] for on, off in pairs
                ),
                "p50_on_over_off": stats(on["p50"] / off["p50"] for on, off in pairs),
                "images_per_s_on": stats(on["throughput"] for on, _ in pairs),
                "images_per_s_off": stats(off["throughput"] for _, off in pairs),
            }
        )
        on = by["on"]
        lat = stats(1e3 * m["mean_latency"] for m in on)
        breakdown.append(
            {
                "setting": setting,
                "req_batch": b,
                "concurrency": c,
                "mean_latency_ms": lat,
                "queue_wait_ms": stats(1e3 * m["srv_queue"] for m in on),
                "model_ms_per_batch": stats(1e3 * m["srv_model"] for m in on),
                "geometry_ms_per_batch": stats(1e3 * m["srv_geometry"] for m in on),
                "grpc_and_other_ms": stats(
                    1e3
                    * (m["mean_latency"] - m["srv_queue"] - m["srv_model"] - _nz(m["srv_geometry"]))
                    for m in on
                ),
                "merged_batch": stats(m["srv_batch"] for m in on),
                "worker_busy_geometry": stats(_nz(m["srv_busy_geometry"]) for m in on),
                "worker_busy_model": stats(m["srv_busy_model"] for m in on),
                "off_worker_busy_model": stats(m["srv_busy_model"] for m in by["off"]),
            }
        )

    summary: dict = {
        "target": f"throughput(guard on) / throughput(guard off) >= {TARGET_RATIO} "
        f"at the best batching setting"
    }
    verdicts = []
    for b in sorted({r["req_batch"] for r in ratio_rows}):
        rr = [r for r in ratio_rows if r["req_batch"] == b]
        best = max(rr, key=lambda r: r["images_per_s_on"]["median"])
        ratio = best["throughput_on_over_off"]
        peak_off = max(r["images_per_s_off"]["median"] for r in rr)
        peak_ratio = best["images_per_s_on"]["median"] / peak_off
        best_ratio = max(rr, key=lambda r: r["throughput_on_over_off"]["median"])
        met = ratio["median"] >= TARGET_RATIO
        summary[f"{b} image(s)/request: best guard-ON setting"] = (
            f"{best['setting']}, concurrency {best['concurrency']}: "
            f"{fmt_stat(best['images_per_s_on'])} images/s ON vs "
            f"{fmt_stat(best['images_per_s_off'])} OFF"
        )
        summary[f"{b} image(s)/request: ratio ON/OFF there"] = ratio
        summary[f"{b} image(s)/request: peak ON / peak OFF (each at its own best)"] = peak_ratio
        summary[f"{b} image(s)/request: highest ratio of any setting"] = (
            f"{fmt_stat(best_ratio['throughput_on_over_off'])} at {best_ratio['setting']}, "
            f"concurrency {best_ratio['concurrency']}"
        )
        verdict = (
            f"MET ({ratio['median']:.3f} >= {TARGET_RATIO})"
            if met
            else f"MISSED by {TARGET_RATIO - ratio['median']:.3f} (ratio {ratio['median']:.3f} "
            f"= {100 * ratio['median'] / TARGET_RATIO:.1f}% of the target; guard-ON "
            f"throughput would have to grow {TARGET_RATIO / ratio['median']:.1f}x)"
        )
        summary[f"{b} image(s)/request: target"] = verdict
        verdicts.append((b, verdict))
    floor = res["floor"]
    if floor:
        fm = [r for r in floor if r["what"].startswith("onnxruntime")]
        peak_floor = max(r["images_per_s"]["median"] for r in fm)
        peak_off = max((r["images_per_s_off"]["median"] for r in ratio_rows), default=math.nan)
        peak_on = max((r["images_per_s_on"]["median"] for r in ratio_rows), default=math.nan)
        summary["floor: onnxruntime in-process peak images/s"] = peak_floor
        summary["served guard OFF peak / floor peak"] = peak_off / peak_floor
        summary["served guard ON peak / floor peak"] = peak_on / peak_floor
    if breakdown:
        geo = sum(_nz(m["srv_busy_geometry"]) for m in ms if m["guard"] == "on")
        mod = sum(_nz(m["srv_busy_model"]) for m in ms if m["guard"] == "on")
        summary[
            "guard ON: geometry / (geometry + model) of the batch worker's busy time, all cells"
        ] = geo / (geo + mod) if geo + mod > 0 else math.nan
        summary["guard ON: share of window wall time the batch worker spent in geometry"] = stats(
            r["worker_busy_geometry"]["median"] for r in breakdown
        )
        top = max(breakdown, key=lambda r: r["mean_latency_ms"]["median"])
        summary["guard ON: slowest cell"] = (
            f"{top['setting']} b={top['req_batch']} c={top['concurrency']}: mean "
            f"{top['mean_latency_ms']['median']:.1f} ms = queue "
            f"{top['queue_wait_ms']['median']:.1f} + model "
            f"{top['model_ms_per_batch']['median']:.1f} + geometry "
            f"{top['geometry_ms_per_batch']['median']:.1f} + gRPC/other "
            f"{top['grpc_and_other_ms']['median']:.1f} ms"
        )
    summary["server start-up s"] = stats(res["startup"])
    summary["benchmark wall time s"] = res["elapsed_s"]
    return {
        "rows": rows,
        "ratios": ratio_rows,
        "breakdown": breakdown,
        "summary": summary,
        "verdicts": verdicts,
    }


def to_input_layout(x: np.ndarray, artifact: Path) -> np.ndarray:
    """Fashion-MNIST ``[N, 1, 28, 28]`` in the layout of the artifact's model: zero-padded
    (centred) to its height and width, the grey channel repeated to its channels
    (``guard.model.nets.to_rgb32`` for a 3x32x32 model), so the benchmark serves any image model."""
    import onnxruntime as ort

    dims = (
        ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
        .get_inputs()[0]
        .shape[1:]
    )
    if len(dims) != 3 or not all(isinstance(d, int) for d in dims):
        raise SystemExit(f"bench.serve: error: the model's input is {dims}, expected [C, H, W]")
    c, h, w = (int(d) for d in dims)
    if h < 28 or w < 28:
        raise SystemExit(f"bench.serve: error: the model's input {c}x{h}x{w} is below 28x28")
    top, left = (h - 28) // 2, (w - 28) // 2
    out = np.zeros((len(x), c, h, w), np.float32)
    out[:, :, top : top + 28, left : left + 28] = x
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.upstream:
        from bench import serve_upstream

        return serve_upstream.main(args)
    args = _defaults(args)
    res = run(args)
    out = summarize(args, res)
    notes = [
        "guard ON and guard OFF are two servers of the same artifact and model started in the "
        "same run with the same batching setting; OFF is `--no-geometry` (logits + prediction "
        "only). Both get the server's default outputs. Measurements alternate ON/OFF within "
        "each repeat; ratios are per repeat pair.",
        "Latency is per request (b images) as the client sees it; p50/p99 over the requests "
        "completed in one measuring window, then median [min, max] over repeats.",
        "merged_batch, queue_ms, model_ms_per_batch, geometry_ms_per_batch: means from the "
        "server's Prometheus histograms (guard_batch_size, guard_queue_seconds, "
        "guard_model_seconds, guard_geometry_seconds) scraped when the measuring window opens "
        "and closes. queue_ms counts from arrival until the request's batch starts, so it "
        "includes waiting for the previous batch; grpc_and_other_ms = mean latency - queue - "
        "model - geometry (per-batch means, so approximate when merged batches vary). "
        "worker_busy_*: seconds the single batch worker spent in that stage / window wall time.",
        "The client (tritonclient, Python) runs on the same 2 cores as the server, and the "
        "machine is shared, so absolute figures are noisy; compare the ratios.",
    ]
    for s in res["skipped"]:
        notes.append(
            f"skipped {s['setting']} b={s['req_batch']} c={s['concurrency']}: "
            f"{s['in_flight_images']} images in flight, beyond saturation (from "
            f"c={s['saturated_at_concurrency']}: c x b >= {args.saturation_factor:g} x "
            f"max_batch_size); more concurrency only adds queueing"
        )
    config = {
        k: (v if not isinstance(v, list) else [list(t) if isinstance(t, tuple) else t for t in v])
        for k, v in vars(args).items()
    }
    jpath, mpath = write_results(
        args.name,
        out["rows"],
        args.out_dir,
        title="Benchmark 3: end to end through gRPC (tritonclient), guard ON vs OFF",
        sections={
            "Guard ON / guard OFF, paired per repeat": out["ratios"],
            "Guard ON: what a request's latency is made of (server histograms)": out["breakdown"],
            "Floor: in-process, no gRPC": res["floor"],
            "Skipped cells": res["skipped"],
        },
        summary=out["summary"],
        notes=notes,
        config=config,
    )
    print()
    for k, v in out["summary"].items():
        print(f"{k}: {fmt_stat(v)}")
    for b, v in out["verdicts"]:
        print(f"TARGET (>= {TARGET_RATIO} x guard-off throughput), {b} image(s)/request: {v}")
    print(f"wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
